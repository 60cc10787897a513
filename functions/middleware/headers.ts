/** Security headers on every response, and CORS where origins are configured (GENIE_EDGE_CORS_ORIGINS). */
import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { secureHeaders } from "hono/secure-headers";

/** A strict same-origin content security policy; cross-origin resource reads only with CORS origins. */
export function securityHeaders(corsOrigins: readonly string[]): MiddlewareHandler {
  return secureHeaders({
    contentSecurityPolicy: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'"],
      imgSrc: ["'self'", "data:", "blob:"],
      connectSrc: ["'self'"],
      objectSrc: ["'none'"],
      baseUri: ["'none'"],
      formAction: ["'self'"],
      frameAncestors: ["'none'"],
    },
    crossOriginResourcePolicy: corsOrigins.length > 0 ? "cross-origin" : "same-origin",
    crossOriginEmbedderPolicy: false,
  });
}

/** CORS for `corsOrigins` (`*`: any), exposing the `x-genie-*` headers; none when the list is empty. */
export function crossOrigin(corsOrigins: string[]): MiddlewareHandler | undefined {
  if (corsOrigins.length === 0) return undefined;
  return cors({
    origin: corsOrigins.includes("*") ? "*" : corsOrigins,
    allowMethods: ["GET", "POST", "OPTIONS"],
    allowHeaders: ["authorization", "content-type", "accept"],
    exposeHeaders: [
      "retry-after",
      "x-request-id",
      "x-genie-id",
      "x-genie-nfe",
      "x-genie-steps",
      "x-genie-calls",
      "x-genie-cost",
      "x-genie-backend",
    ],
    maxAge: 600,
  });
}
