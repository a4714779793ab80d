/*
 * Flask-FinConn widget, payments half: save a bank account for ACH debits.
 *
 * Loaded on first use by finconn-connect.js (FinConn.loadPayments), or up front with
 * finconn.scripts(payments=True). Defines window.FinConn.payments:
 * - collect(): POST <endpoint>/setup-intents, Stripe.js collectBankAccountForSetup, the
 *   mandate (shown here: Stripe leaves that to us), confirmUsBankAccountSetup, then POST
 *   <endpoint>/setup-intents/<id>/complete, whose answer (re-read from Stripe) is the result;
 * - mandate(text): the mandate in a modal dialog, resolving true on Accept;
 * and the <finconn-verify payment-method="pm id"> element, where the holder types the
 * microdeposit amounts or the descriptor code (POST <endpoint>/payment-methods/<id>/verify).
 */
(() => {
  "use strict";
  const F = window.FinConn;
  if (!F || F.payments) return;
  const { request, stripeFor, FinConnError, defaultEndpoint } = F;
  let dialogs = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = `finconn-payments__${className}`;
    if (text != null) node.textContent = text;
    return node;
  }

  function button(label, kind) {
    const b = el("button", `button finconn-payments__button--${kind}`, label);
    b.type = "button";
    return b;
  }

  /** Run a Stripe.js call; its {error} and its exceptions become FinConnErrors. */
  async function stripeCall(run) {
    let result;
    try {
      result = await run();
    } catch (error) {
      throw new FinConnError("stripe_error", (error && error.message) || "Stripe.js could not save the bank account.", error);
    }
    if (result && result.error) {
      throw new FinConnError(result.error.code || result.error.type || "stripe_error", result.error.message || "Stripe.js could not save the bank account.");
    }
    return result || {};
  }

  /**
   * Show the mandate in a modal dialog; resolves true when the holder accepts, false when
   * they cancel (the Cancel button or Escape). The dialog is removed either way.
   */
  function mandate(text, title = "Authorize debits from your bank account") {
    return new Promise((resolve) => {
      const id = `finconn-mandate-${++dialogs}`;
      const dialog = el("dialog", "dialog");
      dialog.setAttribute("aria-labelledby", `${id}-title`);
      dialog.setAttribute("aria-describedby", `${id}-text`);
      const heading = el("h2", "title", title);
      heading.id = `${id}-title`;
      const body = el("div", "mandate");
      body.id = `${id}-text`;
      // Focus starts on the text, not on Accept: Enter must not agree to anything unread. It
      // stays in the Tab order, so that a long text can be scrolled with the keyboard.
      body.tabIndex = 0;
      for (const paragraph of String(text || "").split(/\n\s*\n/)) {
        if (paragraph.trim()) body.append(el("p", "", paragraph.trim()));
      }
      const cancel = button("Cancel", "cancel");
      const accept = button("Accept", "accept");
      const actions = el("div", "actions");
      actions.append(cancel, accept);
      dialog.append(heading, body, actions);
      let answer = false;
      const close = (value) => {
        answer = value;
        dialog.close();
      };
      // Tab goes round the dialog: a modal dialog alone would let it out to the browser.
      dialog.addEventListener("keydown", (event) => {
        if (event.key !== "Tab") return;
        const stops = [body, cancel, accept];
        const at = stops.indexOf(document.activeElement);
        const next = stops[(at + (event.shiftKey ? -1 : 1) + stops.length) % stops.length];
        event.preventDefault();
        next.focus();
      });
      cancel.addEventListener("click", () => close(false));
      accept.addEventListener("click", () => close(true));
      dialog.addEventListener("close", () => {
        dialog.remove();
        resolve(answer);
      });
      document.body.append(dialog);
      dialog.showModal();
      body.focus();
    });
  }

  /** The setup flow behind <finconn-connect purpose="payments"> (FinConn.collect calls it). */
  async function collect({ endpoint = defaultEndpoint, billingDetails } = {}) {
    const intent = await request(`${endpoint}/setup-intents`, {});
    const stripe = await stripeFor(intent);
    // The holder's details from the server; the page's non-empty billing attributes win.
    const billing = { ...intent.billing_details };
    for (const [key, value] of Object.entries(billingDetails || {})) if (value) billing[key] = value;
    const collected = await stripeCall(() =>
      stripe.collectBankAccountForSetup({
        clientSecret: intent.client_secret,
        params: {
          payment_method_type: "us_bank_account",
          payment_method_data: { billing_details: { name: billing.name || "", email: billing.email || undefined } },
        },
      }),
    );
    const setupIntent = collected.setupIntent;
    // Stripe.js resolves a closed window with the intent still waiting for a payment method.
    if (!setupIntent || setupIntent.status === "requires_payment_method") {
      return { paymentMethod: null, accounts: [], cancelled: true, reason: "cancelled" };
    }
    if (!(await mandate(intent.mandate_text))) {
      return { paymentMethod: null, accounts: [], cancelled: true, reason: "mandate_declined" };
    }
    await stripeCall(() => stripe.confirmUsBankAccountSetup(intent.client_secret));
    const done = await request(`${endpoint}/setup-intents/${encodeURIComponent(intent.id)}/complete`, {});
    const paymentMethod = done.payment_method || null;
    return {
      paymentMethod,
      accounts: done.accounts || [],
      cancelled: Boolean(done.cancelled) || !paymentMethod,
      reason: paymentMethod ? null : "cancelled",
    };
  }

  /** A date from the server as the browser's locale writes it; "" when there is none. */
  function day(value) {
    if (!value) return "";
    const date = new Date(typeof value === "number" ? value * 1000 : value);
    return isNaN(date) ? "" : date.toLocaleDateString(undefined, { month: "long", day: "numeric" });
  }

  class FinConnVerifyElement extends HTMLElement {
    #form = null;
    #status = null;
    #paymentMethod = null;

    static define(tag = "finconn-verify", registry = window.customElements) {
      if (!registry.get(tag)) registry.define(tag, this);
      return this;
    }

    get endpoint() {
      return (this.getAttribute("endpoint") ?? defaultEndpoint).replace(/\/+$/, "");
    }

    set endpoint(value) {
      this.setAttribute("endpoint", value);
    }

    get paymentMethodId() {
      return this.getAttribute("payment-method") || "";
    }

    set paymentMethodId(value) {
      this.setAttribute("payment-method", value);
    }

    /** The payment method last read from the server. */
    get paymentMethod() {
      return this.#paymentMethod;
    }

    #url(suffix = "") {
      return `${this.endpoint}/payment-methods/${encodeURIComponent(this.paymentMethodId)}${suffix}`;
    }

    #emit(name, detail, cancelable = false) {
      const event = new CustomEvent(`finconn-verify-${name}`, { bubbles: true, cancelable, detail });
      // As for finconn-connect: a detached element (the page redrew it mid-flow) tells the document.
      return (this.isConnected ? this : document).dispatchEvent(event);
    }

    #say(message, isError = false) {
      this.#status.textContent = message;
      this.#status.classList.toggle("finconn-payments__status--error", isError);
    }

    connectedCallback() {
      if (!this.#status) {
        this.#form = el("form", "form");
        this.#form.noValidate = true;
        this.#form.addEventListener("submit", (event) => {
          event.preventDefault();
          this.verify();
        });
        this.#status = el("p", "status");
        this.#status.setAttribute("role", "status");
        this.#form.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));
        this.append(this.#form, this.#status);
      }
      this.load();
    }

    /** Read the payment method and show its form (or where it stands); resolves with it. */
    async load() {
      this.setAttribute("aria-busy", "true");
      try {
        this.#paymentMethod = await request(this.#url(), { method: "GET" });
        this.#render();
        this.#emit("loaded", { paymentMethod: this.#paymentMethod });
        return this.#paymentMethod;
      } catch (error) {
        this.#fail(error);
        return null;
      } finally {
        this.setAttribute("aria-busy", "false");
      }
    }

    /** Draw the form for the payment method; `attempts`: with its line of attempts left. */
    #render(attempts = true) {
      const pm = this.#paymentMethod;
      const v = pm.verification || {};
      const form = this.#form;
      form.replaceChildren();
      this.dataset.status = pm.status;
      const account = `${pm.bank_name || "your bank"}${pm.last4 ? " account ending in " + pm.last4 : ""}`;
      if (pm.status !== "requires_verification") {
        const done = {
          verified: `Your ${account} is verified and ready for payments.`,
          verification_failed: `Your ${account} could not be verified. Set it up again to use it for payments.`,
          detached: `Your ${account} is no longer set up for payments.`,
        };
        form.append(el("p", "intro", done[pm.status] || `Your ${account} does not need verifying.`));
        return;
      }
      const code = v.type === "descriptor_code";
      const arrives = day(v.arrival_date);
      form.append(
        el(
          "p",
          "intro",
          (code
            ? `We sent a deposit of $0.01 to your ${account}. Its description starts with a 6-character code beginning with SM.`
            : `We sent two small deposits to your ${account}.`) +
            (arrives ? ` ${code ? "It" : "They"} should arrive by ${arrives}.` : "") +
            (code ? " Enter the code to verify the account." : " Enter both amounts to verify the account."),
        ),
      );
      const fields = el("div", "fields");
      const field = (label, name, attrs) => {
        const id = `${this.paymentMethodId}-${name}`;
        const wrap = el("div", "field");
        const tag = el("label", "label", label);
        tag.htmlFor = id;
        const input = el("input", "input");
        Object.assign(input, { id, name, autocomplete: "off", required: true, ...attrs });
        wrap.append(tag);
        if (!code) wrap.append(Object.assign(el("span", "prefix", "$0."), { ariaHidden: "true" }));
        wrap.append(input);
        fields.append(wrap);
      };
      if (code) {
        field("Code from the deposit (SM and 4 more characters)", "descriptor_code", { maxLength: 6, placeholder: "SM", spellcheck: false });
      } else {
        const cents = { inputMode: "numeric", maxLength: 2, placeholder: "00", pattern: "[0-9]{1,2}" };
        field("First deposit, in cents", "amount_1", cents);
        field("Second deposit, in cents", "amount_2", cents);
      }
      const submit = el("button", "button finconn-payments__button--accept", "Verify");
      submit.type = "submit";
      fields.append(submit);
      form.append(fields);
      if (attempts && v.attempts_remaining != null) {
        // The stored count goes down with the values sent from here; Stripe's own page (the
        // link in its email) uses up the same attempts unseen. Only a mismatch's answer is exact.
        const n = v.attempts_remaining;
        form.append(el("p", "attempts", `At most ${n} attempt${n === 1 ? "" : "s"} left.`));
      }
    }

    #fail(error) {
      const detail = { code: error.code || "unexpected_error", message: error.message || "Something went wrong. Try again." };
      this.#say(detail.message, true);
      this.#emit("error", { error: detail });
    }

    /** Mark the fields as wrong, described by the error, and focus the first (the form's sentence when none are left). */
    #invalid() {
      this.#status.id ||= `${this.paymentMethodId}-status`;
      const inputs = [...this.#form.querySelectorAll("input")];
      for (const input of inputs) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", this.#status.id);
      }
      if (inputs.length) inputs[0].focus();
      else this.#focusIntro();
    }

    /** Focus the form's opening sentence (where the payment method now stands), out of the Tab order. */
    #focusIntro() {
      const intro = this.#form.firstChild;
      intro.tabIndex = -1;
      intro.focus();
    }

    /** What the form holds, as the verify route takes it; throws a FinConnError when unfit. */
    #values() {
      const input = (name) => this.#form.elements.namedItem(name);
      if (input("descriptor_code")) {
        let code = input("descriptor_code").value.trim().toUpperCase();
        if (/^[A-Z0-9]{4}$/.test(code)) code = "SM" + code;
        if (!/^SM[A-Z0-9]{4}$/.test(code)) {
          throw new FinConnError("invalid_code", "Enter the 6-character code from the deposit's description: SM followed by 4 letters or digits.");
        }
        return { descriptor_code: code };
      }
      const amounts = ["amount_1", "amount_2"].map((name) => input(name).value.trim());
      if (!amounts.every((a) => /^[0-9]{1,2}$/.test(a) && Number(a) > 0)) {
        throw new FinConnError("invalid_amounts", "Enter both deposits in cents, such as 32 for $0.32.");
      }
      return { amounts: amounts.map(Number) };
    }

    /** Send what the holder typed; `verified` follows on success, `error` (with attempts left) on a mismatch. */
    async verify() {
      if (this.getAttribute("aria-busy") === "true" || !this.#paymentMethod) return;
      let body;
      try {
        body = this.#values();
      } catch (error) {
        this.#fail(error);
        this.#invalid();
        return;
      }
      if (!this.#emit("verify", { paymentMethod: this.#paymentMethod }, true)) return;
      this.setAttribute("aria-busy", "true");
      this.#say("");
      try {
        this.#paymentMethod = await request(this.#url("/verify"), { body });
        const focused = this.contains(document.activeElement);
        this.#render();
        this.#say(this.#paymentMethod.status === "verified" ? "Bank account verified." : "");
        // The redrawn form drops the field or button that held the focus: the sentence saying
        // the account is verified takes it, before the page hears of it (and may move it on).
        if (focused) this.#focusIntro();
        this.#emit("verified", { paymentMethod: this.#paymentMethod });
      } catch (error) {
        this.#fail(error);
        // Show a closed form as the server now counts the attempts; a mismatch's sentence
        // already says how many are left, so the form does not say it twice.
        try {
          this.#paymentMethod = await request(this.#url(), { method: "GET" });
          this.#render(error.code !== "verification_failed");
        } catch {
          // The error above is the one worth showing.
        }
        this.#invalid();
      } finally {
        this.setAttribute("aria-busy", "false");
      }
    }
  }

  F.payments = { collect, mandate, FinConnVerifyElement };
  F.FinConnVerifyElement = FinConnVerifyElement;
  FinConnVerifyElement.define();
})();
