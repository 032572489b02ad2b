// The registration portal (docs/portal.md): sign in, claim a product by its label code or QR code,
// follow it to `provisioned`, list and release one's products.

import { Api, type Claim, type Device } from "./api";
import * as auth from "./auth";
import { type Config, loadConfig } from "./config";
import { h, show } from "./dom";
import { claimText, refusalText, type Say, settled, stepsDone } from "./messages";
import { canScan, codeFromQr, scan } from "./qr";
import { pick, type StringKey } from "./strings";

const table = pick(navigator.languages ?? [navigator.language]);
let config: Config;
let api: Api;
/** A code waiting for the user to sign in (from a QR deep link). */
let pendingCode: string | undefined;
/** Stops whatever the current screen runs in the background (polling, the camera). */
let leave = new AbortController();

const say: Say = (key: StringKey, values: Record<string, string> = {}) =>
  table[key].replace(/\{(\w+)\}/g, (_, name: string) => values[name] ?? (name === "oem" ? config?.oemName ?? "" : ""));

const main = () => document.getElementById("main") as HTMLElement;

function go(path: string): void {
  history.pushState(null, "", path);
  void route();
}

/** Announces `text` to screen readers and shows it in the screen's alert area. */
function alertBox(text: string, kind: "error" | "info" = "error"): HTMLElement {
  return h("p", { id: "alert", class: `alert ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

function focusHeading(): void {
  main().querySelector<HTMLElement>("h1")?.focus();
}

function renderHeader(): void {
  const nav = document.getElementById("nav") as HTMLElement;
  const session = auth.current();
  if (!session) {
    show(nav);
    return;
  }
  const link = (path: string, key: StringKey) => {
    const a = h("a", { href: path, "aria-current": location.pathname === path ? "page" : undefined }, say(key));
    a.addEventListener("click", (event) => {
      event.preventDefault();
      go(path);
    });
    return a;
  };
  const out = h("button", { type: "button", id: "sign-out", class: "link" }, say("sign_out"));
  out.addEventListener("click", () => {
    auth.signOut(config);
    go("/");
  });
  show(
    nav,
    link("/claim", "nav_claim"),
    link("/products", "nav_products"),
    h("span", { class: "who" }, say("signed_in_as", { name: session.name })),
    out,
  );
}

function signInScreen(): void {
  const parts: (Node | false)[] = [
    h("h1", { tabindex: "-1" }, say("title")),
    h("p", {}, say("sign_in_intro")),
  ];
  if (__LOCAL_SIGN_IN__ && config.auth.kind === "local") {
    const input = h("input", { id: "local-name", name: "user", autocomplete: "username", required: true });
    const form = h(
      "form",
      { id: "local-sign-in-form" },
      h("p", { class: "alert info" }, say("local_banner")),
      h("label", { for: "local-name" }, say("local_name")),
      input,
      h("button", { type: "submit", id: "local-sign-in" }, say("local_sign_in")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (auth.signInLocally(input.value)) afterSignIn(location.pathname + location.search);
      else input.setAttribute("aria-invalid", "true");
    });
    parts.push(form);
  } else if (config.auth.kind === "cognito") {
    const cognito = config.auth;
    const button = h("button", { type: "button", id: "sign-in" }, say("sign_in"));
    button.addEventListener("click", () => {
      void auth.startCognitoSignIn(cognito, location.pathname + location.search);
    });
    parts.push(button);
  } else {
    parts.push(alertBox(say("config_missing")));
  }
  show(main(), ...parts);
}

function afterSignIn(returnTo: string): void {
  history.replaceState(null, "", returnTo.startsWith("/claim") || returnTo.startsWith("/products") ? returnTo : "/claim");
  void route();
}

function claimScreen(params: URLSearchParams): void {
  const linked = params.get("code");
  const code = (linked ? codeFromQr(linked) : undefined) ?? pendingCode ?? "";
  pendingCode = undefined;
  const input = h("input", {
    id: "code",
    name: "code",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    "aria-describedby": "code-hint",
    required: true,
  });
  input.value = code;
  const fields: (Node | false)[] = [
    h("label", { for: "code" }, say("code_label")),
    input,
    h("p", { id: "code-hint", class: "hint" }, say("code_hint")),
  ];
  let region: HTMLSelectElement | undefined;
  if (config.regions.length > 0) {
    region = h(
      "select",
      { id: "region", name: "region" },
      h("option", { value: "" }, say("region_none")),
      ...config.regions.map((r) => h("option", { value: r.id }, r.label)),
    );
    fields.push(h("label", { for: "region" }, say("region_label")), region);
  }
  const submit = h("button", { type: "submit", id: "claim-button" }, say("claim_button"));
  const result = h("div", { id: "result" });
  const video = h("video", { id: "camera", class: "camera", muted: true, playsinline: true, hidden: true });
  const scanButton = canScan() && h("button", { type: "button", id: "scan", class: "secondary" }, say("scan_button"));
  if (scanButton) {
    let scanning: AbortController | undefined;
    scanButton.addEventListener("click", () => {
      if (scanning) {
        scanning.abort();
        return;
      }
      scanning = new AbortController();
      leave.signal.addEventListener("abort", () => scanning?.abort());
      video.hidden = false;
      scanButton.textContent = say("scan_stop");
      show(result, h("p", { role: "status" }, say("scan_hint")));
      scan(video, scanning.signal)
        .then((found) => {
          if (found) {
            input.value = found;
            show(result);
            submit.focus();
          }
        })
        .catch(() => show(result, alertBox(say("scan_failed"))))
        .finally(() => {
          scanning = undefined;
          video.hidden = true;
          scanButton.textContent = say("scan_button");
        });
    });
  }
  const form = h("form", { id: "claim-form", novalidate: true }, ...fields, h("div", { class: "actions" }, submit, scanButton), video);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      input.setAttribute("aria-invalid", "true");
      show(result, alertBox(say("code_empty")));
      input.focus();
      return;
    }
    submit.disabled = true;
    void api.claim(value, region?.value || undefined).then((answer) => {
      submit.disabled = false;
      if (answer.ok) {
        go(`/claims/${encodeURIComponent(answer.value.claim_id)}`);
        return;
      }
      input.setAttribute("aria-invalid", String(answer.error.code === "device_not_found" || answer.error.code === "invalid_code"));
      show(result, alertBox(refusalText(say, answer.error)));
      if (answer.error.code === "unauthorized") {
        // Signed in again, the user finds the code still filled in.
        auth.forget();
        pendingCode = value;
        void route().then(() => main().append(alertBox(say("error_unauthorized"))));
      }
    });
  });
  show(
    main(),
    h("h1", { tabindex: "-1" }, say("claim_heading")),
    h("p", {}, say("claim_intro")),
    form,
    result,
  );
}

function progressScreen(claimId: string): void {
  const signal = leave.signal;
  const steps = (["step_reserved", "step_sent", "step_arrived"] as const).map((key) =>
    h("li", { class: "step" }, say(key)),
  );
  const message = h("p", { id: "progress-message", role: "status", "aria-live": "polite" });
  const actions = h("div", { class: "actions", id: "progress-actions" });
  const section = h("section", { id: "progress", "aria-labelledby": "progress-heading" },
    h("ol", { class: "steps" }, ...steps), message, actions);
  show(main(), h("h1", { id: "progress-heading", tabindex: "-1" }, say("progress_heading")), section);

  let shown = "";
  const draw = (claim: Claim) => {
    const done = stepsDone(claim);
    steps.forEach((step, i) => {
      step.classList.toggle("done", i < done);
      step.toggleAttribute("aria-current", i === done && !settled(claim));
    });
    const { text, retry } = claimText(say, claim);
    const key = `${claim.state}|${retry}|${text}`;
    if (key === shown) return;
    shown = key;
    section.dataset.state = claim.state;
    section.dataset.failure = claim.failure?.code ?? "";
    message.textContent = text;
    const buttons: Node[] = [];
    if (retry) {
      const again = h("button", { type: "button", id: "retry" }, say("retry_button"));
      again.addEventListener("click", () => {
        again.disabled = true;
        void api.retry(claim.claim_id).then((answer) => {
          again.disabled = false;
          if (answer.ok) draw(answer.value);
          else show(actions, again, alertBox(refusalText(say, answer.error)));
        });
      });
      buttons.push(again);
    }
    if (claim.state === "provisioned") buttons.push(navButton("to-products", "/products", "to_products"));
    if (claim.state !== "pending" && claim.state !== "endpoint_published")
      buttons.push(navButton("claim-another", "/claim", "claim_another", "secondary"));
    show(actions, ...buttons);
  };

  const poll = async () => {
    while (!signal.aborted) {
      const answer = await api.getClaim(claimId);
      if (signal.aborted) return;
      if (answer.ok) {
        draw(answer.value);
        // An expired claim can still complete if the device arrives late (docs/api.md): keep looking.
        if (settled(answer.value)) return;
      } else {
        show(actions, alertBox(refusalText(say, answer.error)));
        if (answer.error.status > 0 && answer.error.status < 500 && answer.error.code !== "rate_limited") return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  };
  void poll();
}

function navButton(id: string, path: string, key: StringKey, kind = ""): HTMLElement {
  const button = h("button", { type: "button", id, class: kind }, say(key));
  button.addEventListener("click", () => go(path));
  return button;
}

function stateName(device: Device): string {
  const key = `product_state_${device.state}`;
  return key in table ? say(key as StringKey) : say("product_state_other", { state: device.state });
}

async function productsScreen(): Promise<void> {
  const signal = leave.signal;
  const list = h("ul", { id: "products", class: "products", "aria-busy": "true" });
  const notice = h("div", { id: "result" });
  show(main(), h("h1", { tabindex: "-1" }, say("products_heading")), notice, list);
  show(list, h("li", {}, say("products_loading")));
  const devices: Device[] = [];
  let token: string | undefined;
  do {
    const page = await api.devices(token);
    if (signal.aborted) return;
    if (!page.ok) {
      list.removeAttribute("aria-busy");
      show(list);
      show(notice, alertBox(refusalText(say, page.error)));
      return;
    }
    devices.push(...page.value.devices);
    token = page.value.next_token ?? undefined;
  } while (token);
  list.removeAttribute("aria-busy");
  if (devices.length === 0) {
    show(list, h("li", { class: "empty" }, say("products_empty")));
    return;
  }
  show(list, ...devices.map((device) => productItem(device, notice)));
}

function productItem(device: Device, notice: HTMLElement): HTMLElement {
  const claimed = new Date(device.claimed_at);
  const actions: Node[] = [];
  if (device.state === "provisioned") {
    const release = h("button", { type: "button", class: "secondary release", "aria-label": `${say("release_button")} ${device.thing_name}` }, say("release_button"));
    release.addEventListener("click", () => confirmRelease(device, notice, release));
    actions.push(release);
  } else {
    actions.push(navButton(`progress-${device.claim_id}`, `/claims/${encodeURIComponent(device.claim_id)}`, "show_progress", "secondary"));
  }
  return h(
    "li",
    { class: "product", "data-thing": device.thing_name, "data-state": device.state },
    h("h2", {}, device.thing_name),
    h("p", { class: "state" }, stateName(device)),
    device.sku && h("p", {}, say("product_sku", { sku: device.sku })),
    !Number.isNaN(claimed.getTime()) && h("p", {}, say("product_claimed", { date: claimed.toLocaleDateString() })),
    h("div", { class: "actions" }, ...actions),
  );
}

function confirmRelease(device: Device, notice: HTMLElement, opener: HTMLElement): void {
  const confirm = h("button", { type: "button", id: "release-confirm", class: "danger" }, say("release_confirm"));
  const cancel = h("button", { type: "button", id: "release-cancel", class: "secondary" }, say("release_cancel"));
  const dialog = h(
    "dialog",
    { id: "release-dialog", "aria-labelledby": "release-title", "aria-describedby": "release-text" },
    h("h2", { id: "release-title" }, say("release_title", { name: device.thing_name })),
    h("p", { id: "release-text" }, say("release_text")),
    h("div", { class: "actions" }, confirm, cancel),
  );
  document.body.append(dialog);
  const close = () => {
    dialog.close();
    dialog.remove();
    opener.focus();
  };
  cancel.addEventListener("click", close);
  dialog.addEventListener("cancel", close);
  confirm.addEventListener("click", () => {
    confirm.disabled = true;
    void api.release(device.thing_name).then((answer) => {
      dialog.close();
      dialog.remove();
      if (answer.ok) {
        document.querySelector(`li.product[data-thing="${CSS.escape(device.thing_name)}"]`)?.remove();
        show(notice, alertBox(say("released", { name: device.thing_name }), "info"));
      } else {
        show(notice, alertBox(refusalText(say, answer.error)));
      }
      focusHeading();
    });
  });
  dialog.showModal();
  cancel.focus();
}

async function route(): Promise<void> {
  leave.abort();
  leave = new AbortController();
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  if (path === "/callback" && config.auth.kind === "cognito") {
    const next = await auth.finishCognitoSignIn(config.auth, params);
    history.replaceState(null, "", next ?? "/");
    if (!next) {
      renderHeader();
      signInScreen();
      main().append(alertBox(say("sign_in_failed")));
      return;
    }
  }
  renderHeader();
  if (!auth.current()) {
    signInScreen();
  } else if (location.pathname === "/products") {
    void productsScreen();
  } else if (location.pathname.startsWith("/claims/")) {
    progressScreen(decodeURIComponent(location.pathname.slice("/claims/".length)));
  } else {
    claimScreen(new URLSearchParams(location.search));
  }
  focusHeading();
}

async function start(): Promise<void> {
  document.title = table.title;
  (document.getElementById("skip") as HTMLElement).textContent = say("skip");
  const loaded = await loadConfig();
  if (!loaded) {
    show(main(), h("h1", { tabindex: "-1" }, table.title), alertBox(table.config_missing));
    return;
  }
  config = loaded;
  (document.getElementById("brand") as HTMLElement).textContent = config.oemName;
  api = new Api(config.apiUrl, auth.current);
  window.addEventListener("popstate", () => void route());
  await route();
}

void start();
