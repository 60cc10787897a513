import { assertClose, test } from "../testing.ts";
import { vpLinearSchedule } from "../../core/schedule.ts";

test("smoke: gamma round trip", () => {
  const s = vpLinearSchedule();
  for (const t of [1e-3, 0.1, 0.5, 1]) assertClose(s.tFromGamma(s.gamma(t)), t, 1e-12, "t");
});
