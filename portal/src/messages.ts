// What the portal says for each answer of the API, and what the user can do next.

import type { Claim, Refusal } from "./api";
import type { StringKey } from "./strings";

export type Say = (key: StringKey, values?: Record<string, string>) => string;

/** The wait of a `429`, in words. */
export function waitWords(say: Say, seconds: number | undefined): string {
  const s = Math.max(1, seconds ?? 60);
  return s < 120 ? say("wait_seconds", { n: String(s) }) : say("wait_minutes", { n: String(Math.ceil(s / 60)) });
}

/** The sentence for a refused request. */
export function refusalText(say: Say, error: Refusal): string {
  switch (error.code) {
    case "device_not_found":
      return say("error_device_not_found");
    case "invalid_code":
      return say("error_invalid_code");
    case "already_claimed":
      return say("error_already_claimed");
    case "rate_limited":
      return say("error_rate_limited", { wait: waitWords(say, error.retryAfter) });
    case "unauthorized":
      return say("error_unauthorized");
    case "conflict":
      return say("error_conflict");
    case "unavailable":
      return say("error_unavailable");
    case "network":
      return say("error_network");
    default:
      return say("error_other", { code: error.code });
  }
}

/** Where a claim is, as the three steps show it: how many are done (0–3). */
export function stepsDone(claim: Claim): number {
  switch (claim.state) {
    case "pending":
      return 1;
    case "endpoint_published":
      return 2;
    case "provisioned":
      return 3;
    default:
      return 0;
  }
}

/** Whether the claim will not change any more without the user (stop polling). */
export function settled(claim: Claim): boolean {
  return claim.state === "provisioned" || claim.state === "released" || claim.state === "failed";
}

/** The sentence for a claim's state, and whether a retry is the next step. */
export function claimText(say: Say, claim: Claim): { text: string; retry: boolean } {
  switch (claim.state) {
    case "pending":
      return claim.failure
        ? { text: say("state_pending_failure"), retry: true }
        : { text: say("state_pending"), retry: false };
    case "endpoint_published":
      return { text: say("state_endpoint_published"), retry: false };
    case "provisioned":
      return { text: say("state_provisioned"), retry: false };
    case "expired":
      return { text: say("state_expired"), retry: true };
    case "released":
      return { text: say("state_released"), retry: false };
    default:
      return { text: say("state_failed", { message: claim.failure?.message ?? "" }), retry: true };
  }
}
