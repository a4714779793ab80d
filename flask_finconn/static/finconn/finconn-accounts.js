/*
 * Flask-FinConn widget: <finconn-accounts>, the holder's linked accounts.
 *
 * Lists GET <endpoint>/accounts with each account's balance and state, and offers Refresh
 * (POST .../refresh, then polls the account until the refresh settles), Disconnect (POST
 * .../disconnect) and, when the bank needs it, Relink (a new linking flow). Each action fires
 * a cancelable present-tense event before it starts (refresh, disconnect, relink) and a
 * past-tense one when it is done (refreshed, disconnected, relinked). "Use for payments" on a
 * checking or savings account shared with the payment_method permission shows the mandate
 * (the payments script, fetched on first use), then POSTs .../payment-method (authorize,
 * authorized). Reloads itself after any <finconn-connect> on the page links accounts.
 * Needs finconn-connect.js (window.FinConn), which finconn.scripts(accounts=True) loads first.
 */
(() => {
  "use strict";
  if (!window.FinConn || window.customElements.get("finconn-accounts")) return;
  const { request, connect, defaultEndpoint, loadPayments } = window.FinConn;
  const POLL_MS = 1500;
  const POLL_LIMIT = 40;

  function money(amount, currency) {
    try {
      const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
      return format.format(amount / 10 ** format.resolvedOptions().maximumFractionDigits);
    } catch {
      return `${amount} ${currency}`;
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = `finconn-accounts__${className}`;
    if (text != null) node.textContent = text;
    return node;
  }

  class FinConnAccountsElement extends HTMLElement {
    #list = null;
    #empty = null;
    #status = null;
    #accounts = [];
    // Saved payment methods by account id, for the accounts that can be debited.
    #methods = null;
    // Ids of the accounts being polled: one poller per account, however often it is asked for.
    #polling = new Set();
    #onLinked = () => this.load();

    static define(tag = "finconn-accounts", registry = window.customElements) {
      if (!registry.get(tag)) registry.define(tag, this);
      return this;
    }

    get endpoint() {
      return (this.getAttribute("endpoint") ?? defaultEndpoint).replace(/\/+$/, "");
    }

    set endpoint(value) {
      this.setAttribute("endpoint", value);
    }

    /** Which data the Refresh button asks for (`features` attribute; default "balance"). */
    get features() {
      return (this.getAttribute("features") || "balance").split(/[\s,]+/).filter(Boolean);
    }

    set features(value) {
      this.setAttribute("features", [].concat(value).join(" "));
    }

    /** The mandate the holder accepts before "Use for payments" saves an account (default: GET <endpoint>/mandate). */
    get mandateText() {
      return this.getAttribute("mandate-text") || "";
    }

    set mandateText(value) {
      this.setAttribute("mandate-text", value);
    }

    /** The accounts last loaded. */
    get accounts() {
      return this.#accounts;
    }

    connectedCallback() {
      if (!this.#list) {
        // Whatever the host put inside is the empty state.
        this.#empty = el("div", "empty");
        this.#empty.append(...this.childNodes);
        if (!this.#empty.textContent.trim()) this.#empty.textContent = "No bank accounts linked yet.";
        this.#list = el("ul", "list");
        this.#status = el("p", "status");
        this.#status.setAttribute("role", "status");
        this.append(this.#list, this.#empty, this.#status);
      }
      document.addEventListener("finconn-connect-success", this.#onLinked);
      this.load();
    }

    disconnectedCallback() {
      document.removeEventListener("finconn-connect-success", this.#onLinked);
    }

    #emit(name, detail, cancelable = false) {
      return this.dispatchEvent(
        new CustomEvent(`finconn-accounts-${name}`, { bubbles: true, cancelable, detail }),
      );
    }

    /** A done event, and the older name the 0.1 README documented for it. */
    #emitDone(name, legacy, detail) {
      this.#emit(name, detail);
      this.#emit(legacy, detail);
    }

    #say(message, isError = false) {
      this.#status.textContent = message;
      this.#status.classList.toggle("finconn-accounts__status--error", isError);
    }

    #fail(error) {
      const detail = { code: error.code || "unexpected_error", message: error.message || "Something went wrong." };
      this.#say(detail.message, true);
      this.#emit("error", { error: detail });
    }

    /** Fetch and render the holder's accounts; resolves with them. */
    async load() {
      this.setAttribute("aria-busy", "true");
      try {
        const { data } = await request(`${this.endpoint}/accounts`, { method: "GET" });
        this.#accounts = data;
        this.#methods = null;
        if (data.some((account) => this.#debitable(account))) {
          try {
            const methods = await request(`${this.endpoint}/payment-methods`, { method: "GET" });
            this.#methods = new Map();
            for (const pm of methods.data || []) if (pm.account && pm.status !== "detached") this.#methods.set(pm.account, pm);
          } catch {
            // An extension without payments: the rows offer no "Use for payments".
          }
        }
        this.#list.replaceChildren(...data.map((account) => this.#row(account)));
        this.#empty.hidden = data.length > 0;
        this.#emitDone("loaded", "load", { accounts: data });
        for (const account of data) if (this.#pending(account)) this.#poll(account.id);
        return data;
      } catch (error) {
        this.#fail(error);
        return [];
      } finally {
        this.setAttribute("aria-busy", "false");
      }
    }

    /** True while a refresh of one of this element's features is running. */
    #pending(account) {
      const refresh = account.refresh || {};
      return this.features.some((f) => refresh[f] && refresh[f].status === "pending");
    }

    /** Whether the account can become a payment method: Stripe debits active cash checking or savings accounts shared for payments. */
    #debitable(account) {
      return (
        account.status === "active" &&
        (account.category || "cash") === "cash" &&
        ["checking", "savings"].includes(account.subcategory) &&
        (account.permissions || []).includes("payment_method")
      );
    }

    #row(account) {
      const item = el("li", "item");
      item.dataset.account = account.id;
      item.dataset.status = account.status;
      item.dataset.action = account.action;
      // No nested template literals: rjsmin mangles the whitespace inside them.
      const name = (account.display_name || "Account") + (account.last4 ? " •••• " + account.last4 : "");
      const text = el("div", "text");
      text.append(el("span", "name", name), el("span", "institution", account.institution_name));
      const balance = account.balance;
      const figure = el(
        "span",
        "balance",
        balance ? money(balance.current, balance.currency) : account.status === "active" ? "No balance yet" : "",
      );
      if (balance && balance.as_of) figure.title = `As of ${new Date(balance.as_of).toLocaleString()}`;
      const badges = el("div", "badges");
      const badge = (label, kind) => {
        const b = el("span", `badge finconn-accounts__badge--${kind}`, label);
        badges.append(b);
      };
      if (account.status === "disconnected") badge("Disconnected", "muted");
      else if (account.action === "relink_required") badge("Relink needed", "warning");
      else if (account.status === "inactive") badge("Inactive", "warning");
      if (this.#pending(account)) badge("Refreshing…", "info");
      const method = this.#methods && this.#methods.get(account.id);
      if (method) badge(method.status === "verified" ? "Used for payments" : "Payments: needs verifying", "info");
      const actions = el("div", "actions");
      const button = (label, kind, onclick) => {
        const b = el("button", `button finconn-accounts__button--${kind}`, label);
        b.type = "button";
        b.setAttribute("aria-label", `${label} ${name}`);
        b.addEventListener("click", onclick);
        actions.append(b);
        return b;
      };
      if (account.action === "relink_required") button("Relink", "relink", () => this.relink(account));
      if (account.status === "active") {
        button("Refresh", "refresh", () => this.refresh(account)).disabled = this.#pending(account);
      }
      if (this.#methods && this.#debitable(account) && !method) button("Use for payments", "payments", () => this.authorize(account));
      if (account.status !== "disconnected") button("Disconnect", "disconnect", () => this.disconnect(account));
      item.append(text, figure, badges, actions);
      return item;
    }

    #replace(account) {
      const index = this.#accounts.findIndex((a) => a.id === account.id);
      if (index >= 0) this.#accounts[index] = account;
      const old = this.#list.querySelector(`[data-account="${CSS.escape(account.id)}"]`);
      if (old) {
        const hadFocus = old.contains(document.activeElement);
        const fresh = this.#row(account);
        old.replaceWith(fresh);
        if (hadFocus) (fresh.querySelector("button:not(:disabled)") || fresh).focus();
      }
      this.#emitDone("changed", "change", { account });
    }

    /** Ask the bank for fresh data; `refreshed` follows once the refresh has settled. */
    async refresh(account) {
      if (!this.#emit("refresh", { account, features: this.features }, true)) return;
      try {
        const url = `${this.endpoint}/accounts/${encodeURIComponent(account.id)}/refresh`;
        this.#replace(await request(url, { body: { features: this.features } }));
        this.#say(`Refreshing ${account.display_name || "the account"}…`);
        this.#poll(account.id);
      } catch (error) {
        this.#fail(error);
      }
    }

    /** Re-read an account until no refresh is pending (results arrive by webhook). */
    async #poll(id) {
      if (this.#polling.has(id)) return;
      this.#polling.add(id);
      try {
        for (let tries = 0; tries < POLL_LIMIT; tries++) {
          await new Promise((resolve) => setTimeout(resolve, POLL_MS));
          if (!this.isConnected) return;
          const account = await request(`${this.endpoint}/accounts/${encodeURIComponent(id)}`, { method: "GET" });
          if (this.#pending(account)) continue;
          this.#replace(account);
          this.#say(`${account.display_name || "The account"} is up to date.`);
          this.#emit("refreshed", { account, features: this.features });
          return;
        }
      } catch (error) {
        this.#fail(error);
      } finally {
        this.#polling.delete(id);
      }
    }

    async disconnect(account) {
      if (!this.#emit("disconnect", { account }, true)) return;
      try {
        const url = `${this.endpoint}/accounts/${encodeURIComponent(account.id)}/disconnect`;
        const disconnected = await request(url, {});
        this.#replace(disconnected);
        this.#say(`${account.display_name || "The account"} was disconnected.`);
        this.#emit("disconnected", { account: disconnected });
      } catch (error) {
        this.#fail(error);
      }
    }

    /**
     * "Use for payments": show the mandate; once accepted, save the account as a payment
     * method (POST .../payment-method). `authorized` follows with the payment method.
     */
    async authorize(account) {
      if (!this.#emit("authorize", { account }, true)) return;
      const name = account.display_name || "The account";
      try {
        const text = this.mandateText || (await request(`${this.endpoint}/mandate`, { method: "GET" })).mandate_text;
        const { mandate } = await loadPayments();
        if (!(await mandate(text))) {
          this.#say(`${name} was not set up for payments.`);
          return;
        }
        const url = `${this.endpoint}/accounts/${encodeURIComponent(account.id)}/payment-method`;
        const paymentMethod = await request(url, { body: { mandate: { accepted: true } } });
        this.#methods.set(account.id, paymentMethod);
        this.#replace(account);
        this.#say(`${name} can now be used for payments.`);
        this.#emit("authorized", { account, paymentMethod });
      } catch (error) {
        this.#fail(error);
      }
    }

    /** Run a linking flow for an account whose bank needs the holder to log in again. */
    async relink(account) {
      if (!this.#emit("relink", { account }, true)) return;
      try {
        const { accounts } = await connect({ endpoint: this.endpoint });
        if (!accounts.length) return;
        await this.load();
        this.#emit("relinked", { account: this.#accounts.find((a) => a.id === account.id) || account, accounts });
      } catch (error) {
        this.#fail(error);
      }
    }
  }

  window.FinConn.FinConnAccountsElement = FinConnAccountsElement;
  FinConnAccountsElement.define();
})();
