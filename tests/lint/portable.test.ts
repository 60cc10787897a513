/**
 * A lint rule for core/: no Math.* function whose last bits are left to the runtime (docs/contracts.md §2:
 * the same model, settings and seed give the same sample in Deno, Node.js and browsers).
 *
 * ECMAScript fixes the results of only a few Math functions exactly: abs, ceil, floor, round, trunc,
 * sign, sqrt, min, max, imul, clz32 and fround, and the constants. All others (exp, log, sin, pow, …)
 * are "implementation-approximated", and Deno and Node.js disagree in the last bits; core/math.ts has
 * portable versions. The `**` operator is Math.pow in disguise, so it is rejected too, except for
 * exact powers of two written as `2 ** <integer literal>`.
 *
 * Deno only (it reads the source tree), hence outside tests/core, which also runs under Node.js.
 */
import { assertEquals, test } from "../testing.ts";

/** Math members whose results ECMAScript specifies exactly, and the constants. */
const EXACT = new Set([
  "abs",
  "ceil",
  "floor",
  "round",
  "trunc",
  "sign",
  "sqrt",
  "min",
  "max",
  "imul",
  "clz32",
  "fround",
  "E",
  "LN10",
  "LN2",
  "LOG10E",
  "LOG2E",
  "PI",
  "SQRT1_2",
  "SQRT2",
]);

/**
 * The source with comments and the text of string literals blanked out (line structure kept); the
 * `${…}` expressions of template literals stay code. Regular-expression literals are not recognised.
 */
export function codeOnly(src: string): string {
  let out = "";
  let i = 0;
  const braces: number[] = []; // open-brace depth at each `${` we are inside
  let depth = 0;
  const blank = (s: string) => s.replace(/[^\n]/g, " ");
  const template = () => { // at the character after a ` or after the } closing a ${…}
    let j = i;
    while (j < src.length && src[j] !== "`" && !(src[j] === "$" && src[j + 1] === "{")) {
      j += src[j] === "\\" ? 2 : 1;
    }
    out += blank(src.slice(i, j));
    if (src[j] === "`") out += "`", i = j + 1;
    else out += "${", i = j + 2, braces.push(depth), depth++;
  };
  while (i < src.length) {
    const c = src[i], d = src[i + 1];
    if (c === "/" && d === "/") {
      const end = src.indexOf("\n", i);
      const stop = end < 0 ? src.length : end;
      out += blank(src.slice(i, stop)), i = stop;
    } else if (c === "/" && d === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? src.length : end + 2;
      out += blank(src.slice(i, stop)), i = stop;
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < src.length && src[j] !== c && src[j] !== "\n") j += src[j] === "\\" ? 2 : 1;
      out += c + blank(src.slice(i + 1, j)) + c, i = j + 1;
    } else if (c === "`") {
      out += "`", i++;
      template();
    } else if (c === "{") {
      out += c, i++, depth++;
    } else if (c === "}") {
      depth--;
      if (braces.length > 0 && braces[braces.length - 1] === depth) {
        braces.pop();
        out += "}", i++;
        template();
      } else out += c, i++;
    } else out += c, i++;
  }
  return out;
}

/** Offending uses in one file's source: `line: text` for each. */
export function nonPortable(src: string): string[] {
  const code = codeOnly(src);
  const found: string[] = [];
  const lineOf = (at: number) => code.slice(0, at).split("\n").length;
  const report = (at: number, what: string) => found.push(`${lineOf(at)}: ${what}`);
  for (const m of code.matchAll(/\bMath\s*(?:\.\s*([A-Za-z_$][\w$]*)|(\[))/g)) {
    if (m[2]) report(m.index!, "Math[…] (computed member)");
    else if (!EXACT.has(m[1])) report(m.index!, `Math.${m[1]}`);
  }
  for (const m of code.matchAll(/\}\s*=\s*Math\b/g)) report(m.index!, "destructuring Math");
  for (const m of code.matchAll(/\*\*=?/g)) {
    const before = code.slice(Math.max(0, m.index! - 20), m.index!);
    const after = code.slice(m.index! + m[0].length, m.index! + m[0].length + 20);
    const powerOfTwo = m[0] === "**" && /(^|[^\w$.])2\s*$/.test(before) && /^\s*-?\d+(?![\w$.])/.test(after);
    const lhs = /\S*\s*$/.exec(before)![0].trim(), rhs = /^\s*\S*/.exec(after)![0].trim();
    if (!powerOfTwo) report(m.index!, `${lhs} ${m[0]} ${rhs}`);
  }
  return found;
}

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* tsFiles(path);
    else if (entry.isFile && entry.name.endsWith(".ts")) yield path;
  }
}

const CORE = new URL("../../core", import.meta.url).pathname;

test("portable: no implementation-approximated Math function or ** operator in core/", async () => {
  const bad: string[] = [];
  let files = 0;
  for await (const path of tsFiles(CORE)) {
    files++;
    const rel = path.slice(path.lastIndexOf("/core/") + 1);
    for (const f of nonPortable(await Deno.readTextFile(path))) bad.push(`${rel}:${f} (use core/math.ts)`);
  }
  assertEquals(bad, []);
  if (files < 10) throw new Error(`scanned only ${files} files under ${CORE}`);
});

test("portable: the scanner sees code only, and allows exact Math members and powers of two", () => {
  const src = [
    "// Math.exp in a comment",
    "/* Math.log(x) ** 2 */ const a = Math.sqrt(2) + Math.PI;",
    'const s = "Math.sin(x) ** y", t = `Math.cos ${Math.tan(1)} and ${"Math.log"}`;',
    "const b = Math.exp(1), c = Math . pow(2, 3), d = Math['log'](2);",
    "const { log } = Math;",
    "const e = x ** 2, f = 2 ** 32, g = 2 ** -53, h = 2 ** 0.5, k = 2.5 ** 3;",
    "y **= 2;",
  ].join("\n");
  assertEquals(nonPortable(src), [
    "3: Math.tan",
    "4: Math.exp",
    "4: Math.pow",
    "4: Math[…] (computed member)",
    "5: destructuring Math",
    "6: x ** 2,",
    "6: 2 ** 0.5,",
    "6: 2.5 ** 3;",
    "7: y **= 2;",
  ]);
});
