/** The local result store (atomic puts, listing, deletion, safe keys) and the ustar writer. */
import { assert, assertEquals, assertRejects, assertStrictEquals, assertThrows } from "../testing.ts";
import { checkKey, FsResultStore } from "../../functions/jobs/store.ts";
import { tarHeader, tarStream, untar } from "../../functions/jobs/tar.ts";

Deno.test("FsResultStore: put/get/list/delete, atomic replace, no temp files left", async () => {
  const dir = await Deno.makeTempDir({ prefix: "genie-store-" });
  try {
    const store = new FsResultStore(dir, true);
    const enc = new TextEncoder();
    await store.put("j1/chunk-000001.npy", enc.encode("one"));
    await store.put("j1/chunk-000000.npy", enc.encode("zero"));
    await store.put("j2/index.json", enc.encode("{}"));
    await store.put("j1/chunk-000001.npy", enc.encode("uno")); // replaced whole
    assertEquals(new TextDecoder().decode((await store.get("j1/chunk-000001.npy"))!), "uno");
    assertStrictEquals(await store.get("j1/missing.npy"), null);
    // A crash mid-write leaves at most a temp file, which listing ignores.
    await Deno.writeTextFile(`${dir}/j1/chunk-000002.npy.tmp-abcdef`, "half");
    const all = await store.list("j1/");
    assertEquals(all.items.map((o) => [o.key, o.size]), [["j1/chunk-000000.npy", 4], [
      "j1/chunk-000001.npy",
      3,
    ]]);
    assertStrictEquals(all.cursor, null);
    const p1 = await store.list("", { limit: 2 });
    assertEquals(p1.items.map((o) => o.key), ["j1/chunk-000000.npy", "j1/chunk-000001.npy"]);
    const p2 = await store.list("", { limit: 2, cursor: p1.cursor! });
    assertEquals([p2.items.map((o) => o.key), p2.cursor], [["j2/index.json"], null]);
    await store.delete("j1");
    assertEquals((await store.list("")).items.map((o) => o.key), ["j2/index.json"]);
    await store.delete("j1"); // twice is fine
    for (const bad of ["../x", "/abs", "a//b", "a/./b", "a\\b", "", "a/b c"]) {
      assertThrows(() => checkKey(bad), /invalid result key/, bad);
      await assertRejects(() => store.put(bad, new Uint8Array(1)));
    }
    const leftovers = [];
    for await (const e of Deno.readDir(`${dir}/j2`)) leftovers.push(e.name);
    assertEquals(leftovers, ["index.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tar: headers with valid checksums, 512-byte padding, long names split into prefix", async () => {
  const long = "a".repeat(90) + "/" + "b".repeat(60) + "/file.npy";
  const entries = [
    { name: "x/empty", data: new Uint8Array(0), mtime: 0 },
    { name: "x/hello.txt", data: new TextEncoder().encode("hello"), mtime: 1_700_000_000_000 },
    { name: long, data: new Uint8Array(513).fill(7) },
  ];
  const bytes = new Uint8Array(await new Response(tarStream(entries)).arrayBuffer());
  assertStrictEquals(bytes.byteLength, 512 * 3 + 512 + 1024 + 1024);
  const back = untar(bytes);
  assertEquals(back.map((e) => [e.name, e.data.byteLength]), [["x/empty", 0], ["x/hello.txt", 5], [
    long,
    513,
  ]]);
  assertEquals(new TextDecoder().decode(back[1].data), "hello");
  const h = tarHeader("x/hello.txt", 5, 1_700_000_000_000);
  assertEquals(new TextDecoder().decode(h.subarray(257, 263)), "ustar\0");
  assertEquals(new TextDecoder().decode(h.subarray(136, 147)), (1_700_000_000).toString(8).padStart(11, "0"));
  assertThrows(() => tarHeader("é", 1), /ASCII/);
  assertThrows(() => tarHeader("c".repeat(101), 1), /too long/);
  // Corruption is detected.
  const bad = bytes.slice();
  bad[10] ^= 1;
  assertThrows(() => untar(bad), /checksum/);
  assert(bytes.subarray(bytes.byteLength - 1024).every((b) => b === 0));
});
