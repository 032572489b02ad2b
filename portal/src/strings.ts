// Every text the portal shows, in one place: translate by adding a table with the same keys and
// choosing it in `pick` (the browser's language). `{name}` marks a value filled in at run time;
// `{oem}` is the OEM's name from config.json.

export const en = {
  title: "Claim your product",
  skip: "Skip to content",
  nav_claim: "Claim a product",
  nav_products: "My products",
  sign_in: "Sign in",
  sign_out: "Sign out",
  signed_in_as: "Signed in as {name}",
  sign_in_intro:
    "Sign in to connect your product to {oem}'s cloud. You need the code printed on the product's label.",
  local_banner: "Local development build: sign-in is simulated, no real account is used.",
  local_name: "User name (local only)",
  local_sign_in: "Sign in locally",
  sign_in_failed: "Signing in did not work. Please try again.",
  config_missing: "This portal is not configured yet (config.json is missing or incomplete).",

  claim_heading: "Claim a product",
  claim_intro: "Type the code printed on the product's label, or scan its QR code.",
  code_label: "Label code",
  code_hint: "Letters, digits and - _ : exactly as printed, without spaces.",
  region_label: "Where will the product be used? (optional)",
  region_none: "Let {oem} choose",
  claim_button: "Claim",
  scan_button: "Scan QR code",
  scan_stop: "Stop scanning",
  scan_hint: "Point the camera at the QR code on the label.",
  scan_unavailable: "Scanning is not available in this browser: type the code instead.",
  scan_failed: "The camera could not be used: type the code instead.",
  code_empty: "Type the code from the label first.",

  progress_heading: "Connecting your product",
  step_reserved: "Reserved for you",
  step_sent: "Sent to your product",
  step_arrived: "Connected to {oem}'s cloud",
  state_pending: "Your product is reserved for you. We are sending it the address of {oem}'s cloud…",
  state_pending_failure:
    "We could not reach your product's network service yet. We keep trying on our own; you can also try again now.",
  state_endpoint_published: "Your product is moving to {oem}'s cloud… keep it powered and online.",
  state_provisioned: "Done: your product is connected to {oem}'s cloud and registered to you.",
  state_expired:
    "Your product did not arrive in time. Power-cycle the product (switch it off and on again), make sure it is online, then try again.",
  state_released: "This product was released and is no longer registered to you.",
  state_failed: "Claiming did not work: {message} Please try again.",
  retry_button: "Try again",
  to_products: "Go to My products",
  claim_another: "Claim another product",

  error_device_not_found: "We do not know this code. Check the label and type the code exactly as printed.",
  error_invalid_code: "This does not look like a label code. Check the label and type the code exactly as printed.",
  error_already_claimed:
    "This product is already registered to someone else. Ask its owner to release it (for example after a sale), then try again.",
  error_rate_limited: "Too many attempts that did not work. Please wait {wait} before trying again.",
  error_unauthorized: "Your session has ended. Please sign in again.",
  error_conflict: "This cannot be done right now: the product is still being set up.",
  error_unavailable: "The service is busy right now. Please try again in a moment.",
  error_network: "The service could not be reached. Check your connection and try again.",
  error_other: "Something went wrong ({code}). Please try again.",
  wait_seconds: "{n} seconds",
  wait_minutes: "{n} minutes",

  products_heading: "My products",
  products_empty: "You have no products yet.",
  products_loading: "Loading your products…",
  product_sku: "Model {sku}",
  product_claimed: "Claimed {date}",
  product_state_provisioned: "Connected",
  product_state_pending: "Being set up",
  product_state_endpoint_published: "Being set up",
  product_state_other: "{state}",
  show_progress: "Show progress",
  release_button: "Release",
  release_title: "Release {name}?",
  release_text:
    "It will no longer be registered to you, and whoever has it next can claim it. Do this when you sell or give the product away.",
  release_confirm: "Release",
  release_cancel: "Cancel",
  released: "{name} was released.",
} as const;

export type StringKey = keyof typeof en;

const tables: Record<string, Record<StringKey, string>> = { en };

/** The table for the browser's preferred language, English when there is none. */
export function pick(languages: readonly string[]): Record<StringKey, string> {
  for (const language of languages) {
    const table = tables[language.toLowerCase().split("-")[0] ?? ""];
    if (table) return table;
  }
  return en;
}
