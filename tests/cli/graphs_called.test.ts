/** Which graphs a planned CLI run loads and warms up (cli/run.ts graphsCalled). */
import { graphsCalled } from "../../cli/run.ts";
import { assertEquals, test } from "../testing.ts";

test("graphsCalled: ε for every solver but GENIE, whose derivative source picks its graphs", () => {
  const input = {} as never;
  assertEquals(graphsCalled({ solver: "dpmpp-2m" }, input), ["eps"]);
  assertEquals(graphsCalled({ solver: "genie", derivative: "head" }, input), ["head"]);
  assertEquals(graphsCalled({ solver: "genie", derivative: "head", denoise: true }, input), ["head", "eps"]);
  assertEquals(graphsCalled({ solver: "genie", derivative: "jvp" }, input), ["eps", "jvp"]);
  // a model whose JVP graph makes the ODE's tangent itself: that graph alone, ε too for the denoising
  const ode = { odeJvp: true } as never;
  assertEquals(graphsCalled({ solver: "genie", derivative: "jvp" }, ode), ["jvp"]);
  assertEquals(graphsCalled({ solver: "genie", derivative: "jvp", denoise: true }, ode), ["jvp", "eps"]);
  assertEquals(
    graphsCalled({ solver: "genie", derivative: "jvp" }, { odeJvp: true, tangentDerivative: true } as never),
    [
      "eps",
      "jvp",
    ],
  );
  assertEquals(graphsCalled({ solver: "genie", derivative: "fd" }, input), ["eps"]);
  // guided GENIE asks for the derivative along its own tangent: the JVP graph
  assertEquals(graphsCalled({ solver: "genie", derivative: "exact" }, { tangentDerivative: true } as never), [
    "eps",
    "jvp",
  ]);
  assertEquals(graphsCalled({ solver: "genie", derivative: "exact" }, input), ["eps", "head", "jvp"]);
});
