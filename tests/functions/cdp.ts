/**
 * A minimal Chrome DevTools Protocol client for the playground test: starts headless Chromium with
 * `--remote-debugging-port=0`, opens a page and drives it over the DevTools WebSocket.
 */

/** The Chromium binary: $CHROMIUM_BIN or $CHROME_BIN, else the first of the usual names on PATH. */
export async function findChromium(): Promise<string | null> {
  const env = (name: string) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined;
    }
  };
  const explicit = env("CHROMIUM_BIN") ?? env("CHROME_BIN");
  const candidates = explicit ? [explicit] : [];
  const path = (env("PATH") ?? "/usr/bin:/bin").split(":");
  for (
    const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"]
  ) {
    for (const dir of path) candidates.push(`${dir}/${name}`);
  }
  for (const c of candidates) {
    try {
      const s = await Deno.stat(c);
      if (s.isFile) return c;
    } catch { /* next */ }
  }
  return null;
}

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

export class Browser {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners:
    ((msg: { method: string; params: Record<string, unknown>; sessionId?: string }) => void)[] = [];

  private constructor(
    private readonly child: Deno.ChildProcess,
    private readonly ws: WebSocket,
    private readonly profile: string,
  ) {
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data as string);
      if (msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`${msg.error.message} (${msg.error.code})`));
        else p?.resolve(msg.result ?? {});
      } else {
        for (const l of this.listeners) l(msg);
      }
    };
  }

  static async launch(binary: string): Promise<Browser> {
    const profile = await Deno.makeTempDir({ prefix: "genie-chromium-" });
    const child = new Deno.Command(binary, {
      args: [
        "--headless=new",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        `--user-data-dir=${profile}`,
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = Date.now() + 30_000;
    let wsUrl: string | undefined;
    while (!wsUrl) {
      if (Date.now() > deadline) throw new Error(`Chromium did not start:\n${text}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`Chromium exited:\n${text}`);
      text += value;
      wsUrl = /DevTools listening on (ws:\/\/\S+)/.exec(text)?.[1];
    }
    // Keep draining stderr so Chromium never blocks on a full pipe.
    (async () => {
      try {
        while (!(await reader.read()).done) { /* discard */ }
      } catch { /* closed */ }
    })();
    const ws = new WebSocket(wsUrl);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error("DevTools WebSocket failed"));
    });
    return new Browser(child, ws, profile);
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const p = new Promise<Record<string, unknown>>((resolve, reject) =>
      this.pending.set(id, { resolve, reject })
    );
    this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return p;
  }

  on(listener: (msg: { method: string; params: Record<string, unknown>; sessionId?: string }) => void): void {
    this.listeners.push(listener);
  }

  /** A new page (tab) with Runtime, Page and Log enabled. */
  async newPage(): Promise<Page> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId as string);
    this.on((m) => {
      if (m.sessionId !== sessionId) return;
      if (m.method === "Runtime.exceptionThrown") {
        const d = m.params.exceptionDetails as { text: string; exception?: { description?: string } };
        page.errors.push(`exception: ${d.exception?.description ?? d.text}`);
      } else if (m.method === "Log.entryAdded") {
        const e = m.params.entry as { level: string; text: string; source: string; url?: string };
        if (e.level === "error" && !/favicon\.ico/.test(e.url ?? "")) {
          page.errors.push(`${e.source}: ${e.text}`);
        }
      } else if (m.method === "Runtime.consoleAPICalled" && m.params.type === "error") {
        page.errors.push(`console.error: ${JSON.stringify(m.params.args)}`);
      }
    });
    await Promise.all([
      this.send("Runtime.enable", {}, sessionId as string),
      this.send("Page.enable", {}, sessionId as string),
      this.send("Log.enable", {}, sessionId as string),
    ]);
    return page;
  }

  async close(): Promise<void> {
    try {
      await Promise.race([this.send("Browser.close"), new Promise((r) => setTimeout(r, 2000))]);
    } catch { /* closing */ }
    this.ws.close();
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.child.status;
    await Deno.remove(this.profile, { recursive: true }).catch(() => {});
  }
}

export class Page {
  /** Exceptions, console errors and CSP/network errors seen on the page. */
  readonly errors: string[] = [];
  constructor(private readonly browser: Browser, readonly sessionId: string) {}

  async goto(url: string): Promise<void> {
    await this.browser.send("Page.navigate", { url }, this.sessionId);
  }

  /** Evaluates an expression (awaiting promises) and returns its JSON value. */
  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.browser.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }, this.sessionId);
    if (r.exceptionDetails) {
      throw new Error(`evaluate failed: ${JSON.stringify(r.exceptionDetails).slice(0, 500)}`);
    }
    return (r.result as { value: T }).value;
  }

  /** Polls `expression` until it is truthy. */
  async waitFor(expression: string, timeoutMs = 20_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        if (await this.eval<boolean>(`Boolean(${expression})`)) return;
      } catch { /* page navigating */ }
      if (Date.now() > end) {
        const errors = this.errors.join("\n");
        throw new Error(`timed out waiting for ${expression}${errors ? `\npage errors:\n${errors}` : ""}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** A PNG screenshot of the page. */
  async screenshot(): Promise<Uint8Array> {
    const r = await this.browser.send("Page.captureScreenshot", { format: "png" }, this.sessionId);
    return Uint8Array.from(atob(r.data as string), (c) => c.charCodeAt(0));
  }
}
