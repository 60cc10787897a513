import { assertEquals, test } from "../testing.ts";
import { textLines } from "../../functions/child.ts";

test("textLines: lines split across chunks and characters split across bytes; the last unterminated line", async () => {
  const bytes = new TextEncoder().encode("listening on http://x\nγ=1\n\ntail");
  const cuts = [3, 17, 23, 25]; // 23 falls between the two bytes of "γ"
  const chunks = [0, ...cuts].map((a, i) => bytes.slice(a, [...cuts, bytes.length][i]));
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      chunks.forEach((b) => c.enqueue(b));
      c.close();
    },
  });
  const got: string[] = [];
  for await (const line of textLines(stream)) got.push(line);
  assertEquals(got, ["listening on http://x", "γ=1", "", "tail"]);
});
