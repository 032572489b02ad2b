// The deployment's settings, read at start from /config.json (infra/publish-portal.sh writes it from
// the stack's outputs; scripts/dev.sh writes the local one). Nothing secret is in it.

export interface Region {
  id: string;
  label: string;
}

export interface CognitoConfig {
  kind: "cognito";
  /** The hosted UI's base URL, `https://<prefix>.auth.<region>.amazoncognito.com`. */
  domain: string;
  clientId: string;
  scopes: string;
}

export interface Config {
  /** The API's base URL, the stack output ApiUrl (ends with the stage, `/api`). */
  apiUrl: string;
  oemName: string;
  auth: CognitoConfig | { kind: "local" };
  regions: Region[];
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

/** The configuration, or undefined when it is missing or incomplete. */
export function parseConfig(raw: unknown): Config | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const value = raw as Record<string, unknown>;
  const apiUrl = text(value.apiUrl);
  const auth = value.auth as Record<string, unknown> | undefined;
  if (!apiUrl || typeof auth !== "object" || auth === null) return undefined;
  const regions = Array.isArray(value.regions)
    ? value.regions.filter(
        (r): r is Region => typeof r === "object" && r !== null && !!text(r.id) && !!text(r.label),
      )
    : [];
  const base = { apiUrl: apiUrl.replace(/\/+$/, ""), oemName: text(value.oemName) ?? "the manufacturer", regions };
  if (auth.kind === "cognito") {
    const domain = text(auth.domain);
    const clientId = text(auth.clientId);
    if (!domain || !clientId) return undefined;
    return { ...base, auth: { kind: "cognito", domain: domain.replace(/\/+$/, ""), clientId, scopes: text(auth.scopes) ?? "openid email" } };
  }
  if (auth.kind === "local") return { ...base, auth: { kind: "local" } };
  return undefined;
}

export async function loadConfig(): Promise<Config | undefined> {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    return response.ok ? parseConfig(await response.json()) : undefined;
  } catch {
    return undefined;
  }
}
