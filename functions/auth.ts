/**
 * Bearer API keys. Keys are kept only as SHA-256 digests; a presented token is hashed and compared
 * with every stored digest in constant time (no early exit, every key visited), so neither timing nor
 * memory reveals a key.
 */
import { constantTimeEqual, fromHex, toHex } from "../core/hex.ts";

const HEX64 = /^[0-9a-f]{64}$/i;

export async function sha256(data: string | Uint8Array): Promise<Uint8Array> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
}

/** The configured keys as digests. */
export class KeyStore {
  private constructor(private readonly digests: readonly Uint8Array[]) {}

  /** Plain keys are hashed here; `sha256:<hex>` entries are taken as digests. */
  static async create(keys: readonly string[]): Promise<KeyStore> {
    const digests = await Promise.all(keys.map(async (k) => {
      const m = /^sha256:(.*)$/i.exec(k);
      if (m) {
        if (!HEX64.test(m[1])) throw new Error("GENIE_API_KEYS: a sha256: entry needs 64 hex digits");
        return fromHex(m[1]);
      }
      return await sha256(k);
    }));
    return new KeyStore(digests);
  }

  /** No keys configured: every request is allowed. */
  get open(): boolean {
    return this.digests.length === 0;
  }

  get size(): number {
    return this.digests.length;
  }

  /**
   * The id of the key `token` matches (the first 12 hex digits of its digest, safe to log), or null.
   * Every stored digest is compared whatever the outcome.
   */
  async verify(token: string): Promise<string | null> {
    const d = await sha256(token);
    let match = -1;
    for (let i = 0; i < this.digests.length; i++) {
      const eq = constantTimeEqual(d, this.digests[i]);
      match = eq ? i : match;
    }
    return match >= 0 ? "key:" + toHex(this.digests[match]).slice(0, 12) : null;
  }
}

/** The token of an `Authorization: Bearer <token>` header, or null when absent or malformed. */
export function bearerToken(header: string | undefined | null): string | null {
  if (!header) return null;
  const m = /^Bearer[ ]+([\x21-\x7e]{1,512})[ ]*$/i.exec(header);
  return m ? m[1] : null;
}
