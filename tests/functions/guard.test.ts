/**
 * The connection guard of core/api/guard.ts, in process on loopback with short limits: caps answered
 * 503, header and idle timeouts closing connections, long requests left alone, the client's address
 * reaching the handler, limits read from the environment.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "../testing.ts";
import {
  GUARD_DEFAULTS,
  type GuardedServer,
  type GuardLimits,
  guardLimitsFromEnv,
  serveGuarded,
} from "../../core/api/guard.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder(), dec = new TextDecoder();

function start(
  limits: Partial<GuardLimits>,
  handler?: (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Response | Promise<Response>,
) {
  const logs: string[] = [];
  const server = serveGuarded({
    hostname: "127.0.0.1",
    port: 0,
    limits: { ...GUARD_DEFAULTS, ...limits },
    log: (l) => logs.push(l),
  }, handler ?? ((req) => new Response(`ok ${new URL(req.url).pathname}`)));
  return { server, logs };
}

async function connect(server: GuardedServer): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
}

/** Reads until the peer closes or `ms` pass; returns the text and whether the peer closed. */
async function readFor(c: Deno.Conn, ms: number): Promise<{ text: string; closed: boolean }> {
  const buf = new Uint8Array(4096);
  let text = "";
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const n = await Promise.race([c.read(buf).catch(() => null), sleep(end - Date.now()).then(() => -1)]);
    if (n === -1) return { text, closed: false };
    if (n === null) return { text, closed: true };
    text += dec.decode(buf.subarray(0, n));
  }
  return { text, closed: false };
}

/** Reads one whole response (headers and a Content-Length body) off a kept-alive connection. */
async function readResponse(c: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(4096);
  let text = "";
  for (;;) {
    const head = text.indexOf("\r\n\r\n");
    if (head >= 0) {
      const len = Number(/content-length: (\d+)/i.exec(text.slice(0, head))?.[1] ?? 0);
      if (text.length >= head + 4 + len) return text;
    }
    const n = await c.read(buf);
    if (n === null) return text;
    text += dec.decode(buf.subarray(0, n));
  }
}

function closeQuietly(...conns: Deno.Conn[]) {
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed by the server */ }
  }
}

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test(
  "guard: the handler answers through the relay and sees the client's own address",
  opts,
  async () => {
    let seen: Deno.NetAddr | undefined;
    const { server } = start({}, (req, info) => {
      seen = info.remoteAddr;
      return new Response(`hello ${new URL(req.url).pathname}`);
    });
    try {
      const c = await connect(server);
      await c.write(enc.encode("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
      const first = await readResponse(c);
      assertMatch(first, /^HTTP\/1\.1 200/);
      assertMatch(first, /hello \/a$/);
      assertEquals(seen?.port, (c.localAddr as Deno.NetAddr).port);
      assertEquals(seen?.hostname, "127.0.0.1");
      // a second request on the same kept-alive connection
      await c.write(enc.encode("GET /b HTTP/1.1\r\nHost: x\r\n\r\n"));
      assertMatch(await readResponse(c), /hello \/b$/);
      closeQuietly(c);
      // fetch through it, with a body both ways
      const r = await fetch(`http://127.0.0.1:${server.addr.port}/c`, {
        method: "POST",
        body: "x".repeat(200_000),
      });
      assertEquals([r.status, await r.text()], [200, "hello /c"]);
    } finally {
      await server.shutdown();
    }
  },
);

Deno.test(
  "guard: connections over the cap are answered 503 and closed; freed slots admit again",
  opts,
  async () => {
    const { server } = start({ maxConnections: 3, maxPerClient: 100 });
    const held: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 3; i++) held.push(await connect(server));
      await sleep(50);
      assertEquals(server.open, 3);
      const over = await connect(server);
      const { text, closed } = await readFor(over, 2000);
      assertMatch(text, /^HTTP\/1\.1 503 /);
      assertMatch(text, /Retry-After: 1/i);
      assertMatch(text, /"code":"too_many_connections"/);
      assert(closed, "the over-cap connection is closed");
      closeQuietly(over, held.pop()!);
      await sleep(100);
      const r = await fetch(`http://127.0.0.1:${server.addr.port}/x`);
      assertEquals(r.status, 200);
      await r.body?.cancel();
    } finally {
      closeQuietly(...held);
      await server.shutdown();
    }
  },
);

Deno.test("guard: the per-client cap refuses a client's extra connection", opts, async () => {
  const { server } = start({ maxConnections: 100, maxPerClient: 2 });
  const held = [await connect(server), await connect(server)];
  try {
    await sleep(50);
    const third = await connect(server);
    const { text } = await readFor(third, 2000);
    assertMatch(text, /^HTTP\/1\.1 503 /);
    closeQuietly(third);
  } finally {
    closeQuietly(...held);
    await server.shutdown();
  }
});

Deno.test(
  "guard: an unfinished request head is closed after the header timeout, drip-fed or not",
  opts,
  async () => {
    const { server } = start({ headerTimeoutMs: 300, idleTimeoutMs: 60_000 });
    try {
      const silent = await connect(server);
      const drip = await connect(server);
      await silent.write(enc.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
      const began = Date.now();
      // one byte every 100 ms never completes the head in time
      const dripping = (async () => {
        for (const b of enc.encode("GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa")) {
          try {
            await drip.write(new Uint8Array([b]));
          } catch {
            return;
          }
          await sleep(100);
        }
      })();
      const [a, b] = await Promise.all([readFor(silent, 3000), readFor(drip, 3000)]);
      assert(a.closed && b.closed, "both are closed by the server");
      const took = Date.now() - began;
      assert(took >= 250 && took < 2500, `closed after ${took} ms`);
      await dripping;
      assertEquals(server.open, 0);
      closeQuietly(silent, drip);
    } finally {
      await server.shutdown();
    }
  },
);

Deno.test(
  "guard: a kept-alive connection is closed once idle; a long request is not timed",
  opts,
  async () => {
    const { server } = start({ headerTimeoutMs: 200, idleTimeoutMs: 300 }, async (req) => {
      if (new URL(req.url).pathname === "/slow") await sleep(900);
      return new Response("done");
    });
    try {
      const c = await connect(server);
      // 900 ms of work: longer than both timeouts, and answered
      await c.write(enc.encode("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
      assertMatch(await readResponse(c), /done$/);
      // then idle: closed after about 300 ms
      const began = Date.now();
      const { closed } = await readFor(c, 3000);
      const took = Date.now() - began;
      assert(closed && took >= 250 && took < 2500, `idle close after ${took} ms (closed: ${closed})`);
      closeQuietly(c);
    } finally {
      await server.shutdown();
    }
  },
);

Deno.test("guard: shutdown lets a request in flight finish, then refuses connections", opts, async () => {
  const { server } = start({}, async () => {
    await sleep(300);
    return new Response("finished");
  });
  const pending = fetch(`http://127.0.0.1:${server.addr.port}/`).then((r) => r.text());
  await sleep(100);
  await server.shutdown();
  assertEquals(await pending, "finished");
  let refused = false;
  try {
    (await connect(server)).close();
  } catch {
    refused = true;
  }
  assert(refused, "no listener after shutdown");
});

Deno.test("guard: limits from the environment, each bad value naming its variable", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assertEquals(guardLimitsFromEnv(env({})), { ...GUARD_DEFAULTS });
  assertEquals(
    guardLimitsFromEnv(env({ GENIE_MAX_CONNECTIONS: "40", GENIE_IDLE_TIMEOUT_MS: " 5000 " })),
    { ...GUARD_DEFAULTS, maxConnections: 40, idleTimeoutMs: 5000 },
  );
  for (const bad of ["0", "-1", "1.5", "abc", "1e3"]) {
    assertThrows(
      () => guardLimitsFromEnv(env({ GENIE_HEADER_TIMEOUT_MS: bad })),
      Error,
      "GENIE_HEADER_TIMEOUT_MS",
    );
  }
  assertThrows(
    () => guardLimitsFromEnv(env({ GENIE_MAX_CONNECTIONS_PER_CLIENT: "none" })),
    Error,
    "GENIE_MAX_CONNECTIONS_PER_CLIENT",
  );
});

Deno.test("guard: a body sent after 100 Continue is not held to the header timeout", opts, async () => {
  const { server } = start({ headerTimeoutMs: 300, idleTimeoutMs: 60_000 }, async (req) => {
    return new Response(`got ${(await req.text()).length}`);
  });
  try {
    const c = await connect(server);
    await c.write(
      enc.encode("POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 30\r\n\r\n"),
    );
    const buf = new Uint8Array(256);
    const n = await c.read(buf);
    assertMatch(dec.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    // the body arrives slowly, over three header timeouts
    for (let i = 0; i < 3; i++) {
      await sleep(300);
      await c.write(enc.encode("x".repeat(10)));
    }
    assertMatch(await readResponse(c), /got 30$/);
    closeQuietly(c);
  } finally {
    await server.shutdown();
  }
});
