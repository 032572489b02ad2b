// Who the user is. Deployed: the stack's Cognito user pool through its hosted UI, OAuth 2
// authorization code with PKCE; the tokens stay in memory only (a reload signs in again, which the
// hosted UI's own session makes one click). Only the PKCE verifier and state cross the redirect, in
// sessionStorage, and are removed when used.
//
// Locally (the `--local` build only): a name typed in the portal becomes the `x-local-user` header,
// which the local API Gateway turns into the authorizer's caller as Cognito would
// (docs/local-stack.md, "Users"). In a production bundle `__LOCAL_SIGN_IN__` is false, so esbuild
// drops that code, and build.mjs fails the build if the header name is still in it.

import type { CognitoConfig, Config } from "./config";

export interface Session {
  /** Shown in the header. */
  name: string;
  /** The headers that identify the caller to the API. */
  headers: Record<string, string>;
  /** When the token stops working (ms since the epoch). */
  expiresAt: number;
}

let session: Session | undefined;

export function current(): Session | undefined {
  if (session && Date.now() >= session.expiresAt) session = undefined;
  return session;
}

export function forget(): void {
  session = undefined;
}

/** The local-only sign-in: acts as `name` through the local identity mechanism. */
export function signInLocally(name: string): boolean {
  if (!__LOCAL_SIGN_IN__) return false;
  const trimmed = name.trim();
  if (!/^[\x21-\x7e]{1,128}$/.test(trimmed)) return false;
  session = { name: trimmed, headers: { "x-local-user": trimmed }, expiresAt: Number.MAX_SAFE_INTEGER };
  return true;
}

const PKCE_KEY = "portal.pkce";

function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

function redirectUri(): string {
  return `${location.origin}/callback`;
}

/** Sends the browser to the hosted UI; `returnTo` is where the portal goes after signing in. */
export async function startCognitoSignIn(auth: CognitoConfig, returnTo: string): Promise<void> {
  const verifier = randomString();
  const state = randomString();
  const challenge = base64url(
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))),
  );
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state, returnTo }));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: auth.clientId,
    redirect_uri: redirectUri(),
    scope: auth.scopes,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${auth.domain}/oauth2/authorize?${query}`);
}

function tokenClaims(token: string): Record<string, unknown> | undefined {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/**
 * The hosted UI's redirect back (`/callback?code=…&state=…`): exchanges the code for tokens.
 * Returns where to go next, or undefined when it failed.
 */
export async function finishCognitoSignIn(auth: CognitoConfig, params: URLSearchParams): Promise<string | undefined> {
  const saved = sessionStorage.getItem(PKCE_KEY);
  sessionStorage.removeItem(PKCE_KEY);
  let pkce: { verifier: string; state: string; returnTo: string };
  try {
    pkce = JSON.parse(saved ?? "") as typeof pkce;
  } catch {
    return undefined;
  }
  const code = params.get("code");
  if (!code || params.get("state") !== pkce.state) return undefined;
  const response = await fetch(`${auth.domain}/oauth2/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      client_id: auth.clientId,
      code,
      redirect_uri: redirectUri(),
      code_verifier: pkce.verifier,
    }),
  }).catch(() => undefined);
  if (!response?.ok) return undefined;
  const tokens = (await response.json()) as { id_token?: string; expires_in?: number };
  const claims = tokens.id_token ? tokenClaims(tokens.id_token) : undefined;
  if (!tokens.id_token || !claims) return undefined;
  // The API's Cognito authorizer takes the ID token (the caller is its `sub`).
  session = {
    name: typeof claims.email === "string" ? claims.email : "you",
    headers: { authorization: tokens.id_token },
    expiresAt: Date.now() + Math.max(0, (tokens.expires_in ?? 3600) - 30) * 1000,
  };
  return pkce.returnTo.startsWith("/") ? pkce.returnTo : "/";
}

/** Forgets the tokens; with Cognito also ends the hosted UI's session. */
export function signOut(config: Config): void {
  session = undefined;
  if (config.auth.kind === "cognito") {
    const query = new URLSearchParams({ client_id: config.auth.clientId, logout_uri: `${location.origin}/` });
    location.assign(`${config.auth.domain}/logout?${query}`);
  }
}
