// The claim API (docs/api.md), as the portal calls it.

import type { Session } from "./auth";

export interface Claim {
  claim_id: string;
  thing_name: string;
  state: string;
  expires_at: string;
  failure: { code: string; message: string } | null;
}

export interface Device {
  thing_name: string;
  state: string;
  claim_id: string;
  claimed_at: string;
  sku: string | null;
}

/** A refusal: the API's error code, or `network` when no answer came. */
export interface Refusal {
  status: number;
  code: string;
  message: string;
  /** Seconds from `Retry-After`, when the answer had one. */
  retryAfter?: number;
}

export type Result<T> = { ok: true; status: number; value: T } | { ok: false; error: Refusal };

export class Api {
  constructor(
    private readonly base: string,
    private readonly session: () => Session | undefined,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<Result<T>> {
    const session = this.session();
    // An expired session is not sent: API Gateway's own 401 carries no CORS header, so the browser
    // would report it as a network failure.
    if (!session) return { ok: false, error: { status: 401, code: "unauthorized", message: "" } };
    const headers: Record<string, string> = { ...session.headers };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(15000),
      });
    } catch {
      return { ok: false, error: { status: 0, code: "network", message: "" } };
    }
    const text = await response.text().catch(() => "");
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (response.ok) return { ok: true, status: response.status, value: json as T };
    const error = (json as { error?: { code?: string; message?: string } } | null)?.error;
    const retry = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
    return {
      ok: false,
      error: {
        status: response.status,
        code: error?.code ?? `http_${response.status}`,
        message: error?.message ?? "",
        retryAfter: Number.isFinite(retry) ? retry : undefined,
      },
    };
  }

  claim(code: string, region?: string): Promise<Result<Claim>> {
    return this.call("POST", "/v1/claims", region ? { code, region } : { code });
  }

  getClaim(id: string): Promise<Result<Claim>> {
    return this.call("GET", `/v1/claims/${encodeURIComponent(id)}`);
  }

  retry(id: string): Promise<Result<Claim>> {
    return this.call("POST", `/v1/claims/${encodeURIComponent(id)}/retry`);
  }

  devices(nextToken?: string): Promise<Result<{ devices: Device[]; next_token: string | null }>> {
    const query = nextToken ? `?next_token=${encodeURIComponent(nextToken)}` : "";
    return this.call("GET", `/v1/devices${query}`);
  }

  release(thing: string): Promise<Result<null>> {
    return this.call("DELETE", `/v1/devices/${encodeURIComponent(thing)}`);
  }
}
