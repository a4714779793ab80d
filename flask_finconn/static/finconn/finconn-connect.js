(() => {
  "use strict";
  // Included twice (two bundles, a template and a partial): the first copy wins.
  if (window.FinConn && window.FinConn.connect) return;

  const script = document.currentScript;
  // An empty endpoint is valid: the extension mounted at the site's root.
  const defaultEndpoint = (script && script.dataset.endpoint) ?? "/finconn";
  // Scripts we inject need the page's CSP nonce; ours is readable only as a property.
  const nonce = (script && script.nonce) || "";
  // The payments half is a separate file, fetched on first use.
  const data = (script && script.dataset) || {};
  // Every form Stripe documents: v3, v3/, v3/stripe.js and <release train>/stripe.js.
  const STRIPE_SRC = /^https:\/\/js\.stripe\.com\/(v3\/?|(v3|[a-z]+)\/stripe\.js)(\?.*)?$/;
  const loads = new Map();
  const instances = new Map();
  let active = null;
  class FinConnError extends Error {
    constructor(code, message, cause) {
      super(message, cause ? { cause } : undefined);
      this.name = "FinConnError";
      this.code = code;
    }
  }

  const fail = (code, message, cause) => new FinConnError(code, message, cause);

  /** Stripe's own URLs are one script in any form; any other URL is itself, query aside. */
  function scriptKey(url) {
    const absolute = new URL(url, document.baseURI);
    if (STRIPE_SRC.test(absolute.href)) return "js.stripe.com";
    absolute.search = "";
    absolute.hash = "";
    return absolute.href;
  }

  function findScript(key) {
    for (const tag of document.querySelectorAll("script[src]")) {
      if (!tag.dataset.finconnFailed && scriptKey(tag.src) === key) return tag;
    }
    return null;
  }

  function inject(url, getGlobal, retries, name) {
    return new Promise((resolve, reject) => {
      let tag = findScript(scriptKey(url));
      if (!tag) {
        tag = document.createElement("script");
        tag.src = url;
        tag.async = true;
        if (nonce) tag.nonce = nonce;
        document.head.appendChild(tag);
      }
      // A tag that failed, hung or ran without defining its global never fires again: drop it
      // so that the next attempt starts afresh.
      const discard = () => {
        tag.removeEventListener("load", onLoad);
        tag.removeEventListener("error", onError);
        tag.dataset.finconnFailed = "1";
        tag.remove();
      };
      const onLoad = () => {
        clearTimeout(timer);
        const Stripe = getGlobal();
        if (Stripe) return resolve(Stripe);
        discard();
        reject(fail(`${name[1]}_unavailable`, `${url} loaded but did not define ${name[2]}.`));
      };
      const onError = (event) => {
        clearTimeout(timer);
        discard();
        if (retries > 0) {
          inject(url, getGlobal, retries - 1, name).then(resolve, reject);
        } else {
          reject(fail(`${name[1]}_load_failed`, `${name[0]} could not be loaded from ${url}.`, event));
        }
      };
      const timer = setTimeout(() => {
        discard();
        reject(fail(`${name[1]}_load_failed`, `${name[0]} did not load from ${url} in time. Try again.`));
      }, window.FinConn.stripeTimeout);
      tag.addEventListener("load", onLoad);
      tag.addEventListener("error", onError);
    });
  }

  /** The Stripe constructor from `url`, loading the script at most once per page. */
  function loadStripe(url, sandbox) {
    if (typeof url !== "string" || !url) {
      return Promise.reject(
        fail("stripe_js_url_invalid", `loadStripe: expected the URL of Stripe.js, such as "https://js.stripe.com/v3/", got ${JSON.stringify(url)}.`),
      );
    }
    const getGlobal = sandbox
      ? () => window.FinConnSandbox && window.FinConnSandbox.Stripe
      : () => window.Stripe;
    return load(url, getGlobal, STRIPE);
  }

  const STRIPE = ["Stripe.js", "stripe_js", "Stripe"];

  /** What `getGlobal` returns once `url` ran, injecting the script at most once per page. */
  function load(url, getGlobal, name) {
    const ready = getGlobal();
    if (ready) return Promise.resolve(ready);
    const key = scriptKey(url);
    if (!loads.has(key)) {
      const loading = inject(url, getGlobal, 1, name);
      // Forget a failure so that the next click can retry the load.
      loading.catch(() => loads.delete(key));
      loads.set(key, loading);
    }
    return loads.get(key);
  }

  /** A Stripe instance for a session or intent ({stripe_js_url, sandbox, publishable_key}). */
  async function stripeFor(session) {
    const Stripe = await loadStripe(session.stripe_js_url, session.sandbox);
    const key = `${session.sandbox ? "sandbox:" : ""}${session.publishable_key}`;
    if (!instances.has(key)) instances.set(key, Stripe(session.publishable_key));
    return instances.get(key);
  }

  /** The payments script's API (window.FinConn.payments), fetched with its stylesheet on first use. */
  function loadPayments() {
    const ready = window.FinConn.payments;
    if (ready || !data.payments) {
      return ready
        ? Promise.resolve(ready)
        : Promise.reject(fail("payments_js_unavailable", "The payments script is not available: render the page's scripts with finconn.scripts()."));
    }
    if (data.paymentsCss && !document.querySelector("link[data-finconn-payments]")) {
      const link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = data.paymentsCss;
      link.dataset.finconnPayments = "";
      if (nonce) link.nonce = nonce;
      document.head.appendChild(link);
    }
    return load(data.payments, () => window.FinConn.payments, ["The payments script", "payments_js", "FinConn.payments"]);
  }

  /** JSON request to the extension: CSRF token and JSON body on writes; FinConnError on failure. */
  async function request(url, { method = "POST", body, fetch: fetchImpl } = {}) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      const csrf = document.querySelector('meta[name="csrf-token"]');
      if (csrf && csrf.content) headers["X-CSRFToken"] = csrf.content;
      init.body = JSON.stringify(body || {});
    }
    let response;
    try {
      response = await (fetchImpl || window.fetch.bind(window))(url, init);
    } catch (error) {
      throw fail("network_error", "The server could not be reached. Check your connection and try again.", error);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw fail(
        error.code || `http_${response.status}`,
        error.message || `The server answered ${response.status} ${response.statusText}.`.replace(" .", "."),
      );
    }
    if (!data || typeof data !== "object") {
      throw fail("invalid_response", "The server sent a response that is not JSON.");
    }
    return data;
  }

  function permissionList(value) {
    if (!value) return [];
    return (Array.isArray(value) ? value : String(value).split(/[\s,]+/)).filter(Boolean);
  }

  /**
   * Run one linking flow; resolves {accounts, cancelled, session}, rejects with a FinConnError.
   * Only one flow runs at a time on a page, as only one modal can be open.
   */
  async function connect(options = {}) {
    if (active) throw fail("flow_in_progress", "A bank-linking window is already open.");
    const endpoint = String(options.endpoint ?? defaultEndpoint).replace(/\/+$/, "");
    const fetchImpl = options.fetch;
    active = true;
    try {
      const permissions = permissionList(options.permissions);
      const body = permissions.length ? { permissions } : {};
      const session = await request(`${endpoint}/sessions`, { body, fetch: fetchImpl });
      const stripe = await stripeFor(session);
      let result;
      try {
        result = await stripe.collectFinancialConnectionsAccounts({
          clientSecret: session.client_secret,
        });
      } catch (error) {
        throw fail("stripe_error", (error && error.message) || "Stripe.js could not open the linking window.", error);
      }
      if (result && result.error) {
        throw fail(result.error.code || result.error.type || "stripe_error", result.error.message || "The linking window could not be opened.");
      }
      const done = await request(`${endpoint}/sessions/${encodeURIComponent(session.id)}/complete`, {
        fetch: fetchImpl,
      });
      return { accounts: done.accounts || [], cancelled: Boolean(done.cancelled), session: session.id };
    } finally {
      active = null;
    }
  }

  /**
   * Save a bank account for payments (the payments script's flow, loaded on first use);
   * resolves {paymentMethod, accounts, cancelled, reason}. One flow at a time, as for connect.
   */
  async function collect(options = {}) {
    if (active) throw fail("flow_in_progress", "A bank-linking window is already open.");
    active = true;
    try {
      const api = await loadPayments();
      return await api.collect({ ...options, endpoint: String(options.endpoint ?? defaultEndpoint).replace(/\/+$/, "") });
    } finally {
      active = null;
    }
  }

  class FinConnConnectElement extends HTMLElement {
    #button = null;
    #status = null;

    static get observedAttributes() {
      return ["disabled"];
    }

    /** Register the element (once) under `tag`; returns the class. */
    static define(tag = "finconn-connect", registry = window.customElements) {
      if (!registry.get(tag)) registry.define(tag, this);
      return this;
    }

    get endpoint() {
      return this.getAttribute("endpoint") ?? defaultEndpoint;
    }

    set endpoint(value) {
      this.setAttribute("endpoint", value);
    }

    /** "payments" saves a bank account for debits instead of linking accounts for data. */
    get purpose() {
      return this.getAttribute("purpose") || "accounts";
    }

    set purpose(value) {
      this.setAttribute("purpose", value);
    }

    get permissions() {
      return permissionList(this.getAttribute("permissions"));
    }

    set permissions(value) {
      this.setAttribute("permissions", permissionList(value).join(" "));
    }

    get disabled() {
      return this.hasAttribute("disabled");
    }

    set disabled(value) {
      this.toggleAttribute("disabled", Boolean(value));
    }

    get busy() {
      return this.getAttribute("aria-busy") === "true";
    }

    /** The rendered inner <button> (null until the element is connected). */
    get button() {
      return this.#button;
    }

    connectedCallback() {
      // Parsed before its children (script in <head> without defer): render once they exist.
      if (!this.#button && !this.firstChild && document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", () => this.connectedCallback(), { once: true });
        return;
      }
      if (!this.#button) this.#render();
      this.#sync();
    }

    attributeChangedCallback() {
      this.#sync();
    }

    #render() {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "finconn-connect__button";
      button.append(...this.childNodes);
      if (!button.textContent.trim()) button.textContent = "Link your bank";
      const status = document.createElement("span");
      status.className = "finconn-connect__status";
      status.setAttribute("role", "status");
      status.setAttribute("aria-live", "polite");
      button.addEventListener("click", () => this.start());
      this.append(button, status);
      this.#button = button;
      this.#status = status;
    }

    #sync() {
      if (!this.#button) return;
      this.#button.disabled = this.disabled;
      if (this.busy) this.#button.setAttribute("aria-disabled", "true");
      else this.#button.removeAttribute("aria-disabled");
    }

    #say(message, isError = false) {
      if (!this.#status) return;
      this.#status.textContent = message;
      this.#status.classList.toggle("finconn-connect__status--error", isError);
    }

    #emit(name, detail, cancelable = false) {
      const event = new CustomEvent(`finconn-connect-${name}`, { bubbles: true, cancelable, detail });
      // The page may have redrawn the element's part while the modal was open; the outcome is
      // still the page's to hear, so a detached element tells the document instead.
      return (this.isConnected ? this : document).dispatchEvent(event);
    }

    /** The network half of a click; override it to customise the request. */
    connect() {
      if (this.purpose === "payments") {
        const billingDetails = { name: this.getAttribute("billing-name") || "", email: this.getAttribute("billing-email") || "" };
        return collect({ endpoint: this.endpoint, billingDetails });
      }
      return connect({ endpoint: this.endpoint, permissions: this.permissions });
    }

    /**
     * Start a linking flow, as a click does; ignored while one is running. Unless the start
     * event is cancelled, exactly one of success, exit or error follows it.
     */
    async start() {
      if (this.busy || this.disabled) return;
      if (!this.#emit("start", { permissions: this.permissions }, true)) return;
      this.setAttribute("aria-busy", "true");
      this.#sync();
      this.#say("");
      try {
        const { accounts, cancelled, paymentMethod, reason } = await this.connect();
        if (paymentMethod) {
          this.#say(paymentMethod.status === "requires_verification" ? "Bank account saved; it needs verifying." : "Bank account saved.");
          this.#emit("success", { paymentMethod, accounts });
        } else if (accounts.length && this.purpose !== "payments") {
          this.#say(`${accounts.length} account${accounts.length === 1 ? "" : "s"} linked.`);
          this.#emit("success", { accounts });
        } else {
          this.#emit("exit", { reason: reason || (cancelled ? "cancelled" : "no_accounts") });
        }
      } catch (caught) {
        const error = {
          code: (caught && caught.code) || "unexpected_error",
          message: (caught && caught.message) || "Something went wrong. Try again.",
        };
        this.#say(error.message, true);
        this.#emit("error", { error });
      } finally {
        this.setAttribute("aria-busy", "false");
        this.#sync();
      }
    }
  }

  window.FinConn = {
    connect,
    collect,
    loadStripe,
    loadPayments,
    stripeFor,
    request,
    defaultEndpoint,
    FinConnError,
    FinConnConnectElement,
    // How long Stripe.js may take to load before a click gives up (and the next one retries).
    stripeTimeout: 30000,
    // Replaced with the package's version when the extension builds the bundle.
    version: "__FINCONN_VERSION__",
  };
  FinConnConnectElement.define();
  // A <finconn-verify> in the page is a use of the payments script.
  const verify = () => document.querySelector("finconn-verify") && loadPayments().catch(() => {});
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", verify);
  else verify();
})();
