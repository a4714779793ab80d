/*
 * Flask-FinConn sandbox: a stand-in for Stripe.js's Financial Connections modal.
 *
 * Stripe(publishableKey).collectFinancialConnectionsAccounts({clientSecret}) opens a real
 * modal (consent, choose a bank, log in, choose accounts, success) and resolves exactly as
 * Stripe.js does: {financialConnectionsSession: {id, accounts}} with accounts [] when the user
 * closes it, or {error: {type, code, message}} when the session cannot be used. Every step
 * talks to the sandbox through the JSON routes next to this script, authorised by the
 * session's client secret only.
 *
 * The us_bank_account methods work the same way on an intent's client secret:
 * collectBankAccountForSetup/ForPayment open the same modal (one checking or savings account,
 * or routing and account numbers typed in by hand) and resolve {setupIntent}/{paymentIntent},
 * in requires_confirmation, or in requires_payment_method when the user closes it;
 * confirmUsBankAccountSetup/Payment and verifyMicrodepositsForSetup/ForPayment resolve the
 * intent or {error}. Invalid arguments throw an IntegrationError, as Stripe.js does.
 */
(() => {
  "use strict";
  if (window.FinConnSandbox) return;

  const script = document.currentScript;
  const base = new URL(".", script ? script.src : location.href).href;

  const PERMISSIONS = {
    balances: ["Balances", "Current and available balances"],
    ownership: ["Account ownership", "Account holder names, addresses and contact details"],
    payment_method: ["Account and routing numbers", "So that payments can be made from the account"],
    transactions: ["Transactions", "Transaction history, including pending transactions"],
  };
  const DOWN = {
    down_scheduled: [
      "is under scheduled maintenance",
      "The bank announced this maintenance window. Try again later, or choose another bank.",
    ],
    down_unscheduled: [
      "is unavailable right now",
      "We can't connect to this bank at the moment. Try again later, or choose another bank.",
    ],
    down_error: [
      "could not be reached",
      "Something unexpected went wrong between Stripe and the bank. Choose another bank or try again.",
    ],
  };

  /** Build an element: h("button", {class: "x", onclick: f}, "text", child). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === false || value == null) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key in el && key !== "list" && key !== "form") el[key] = value;
      else el.setAttribute(key, value === true ? "" : value);
    }
    el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
    return el;
  }

  async function api(path, clientSecret, body) {
    const url = new URL(`api/${path}`, base);
    const init = { headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ client_secret: clientSecret, ...body });
    } else {
      url.searchParams.set("client_secret", clientSecret);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      return { error: { type: "api_connection_error", message: "The sandbox could not be reached." } };
    }
    let data;
    try {
      data = await response.json();
    } catch {
      data = {};
    }
    if (!response.ok) {
      return { error: data.error || { type: "api_error", message: `The sandbox answered ${response.status}.` } };
    }
    return data;
  }

  const initials = (name) =>
    name
      .split(/\s+/)
      .filter((w) => /^[A-Za-z0-9]/.test(w))
      .slice(0, 2)
      .map((w) => w[0].toUpperCase())
      .join("");

  const color = (institution) => (institution.logo && institution.logo.color) || "#425466";

  function logo(institution, big) {
    return h(
      "span",
      { class: `logo${big ? " logo--big" : ""}`, "aria-hidden": "true", style: `--logo:${color(institution)}` },
      (institution.logo && institution.logo.initials) || initials(institution.name) || "?",
    );
  }

  /** A small bank-building glyph (SVG: no emoji font needed). */
  function bankIcon() {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "28");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M12 2 2 7v2h20V7L12 2Zm-7 9v7h2v-7H5Zm4 0v7h2v-7H9Zm4 0v7h2v-7h-2Zm4 0v7h2v-7h-2ZM3 20v2h18v-2H3Z");
    svg.append(path);
    return svg;
  }

  const label = (value) => (value ? value[0].toUpperCase() + value.slice(1).replace(/_/g, " ") : "");

  function mask(last4) {
    return last4 ? `•••• ${last4}` : "";
  }

  /** The ABA checksum: 3, 7 and 1 times the digits in turn add up to a multiple of 10. */
  function abaValid(routing) {
    const d = [...routing].map(Number);
    const sum = [0, 3, 6].reduce((total, i) => total + 3 * d[i] + 7 * d[i + 1] + d[i + 2], 0);
    return sum % 10 === 0;
  }

  class Modal {
    /**
     * `payment`, when collecting a bank account for an intent: {kind, key, secret, billing,
     * expand, sessionId}. The modal then links one account and attaches it to the intent.
     */
    constructor(session, clientSecret, resolve, payment = null) {
      this.session = session;
      this.secret = clientSecret;
      this.resolve = resolve;
      this.payment = payment;
      this.attached = null;
      this.history = [];
      this.step = null;
      this.institution = null;
      this.accounts = [];
      this.linked = null;
      this.returnFocus = document.activeElement;
      this.mount();
      this.go("consent", false);
    }

    mount() {
      this.host = h("div", { class: "finconn-sandbox-host", "data-finconn-sandbox": "" });
      const root = this.host.attachShadow({ mode: "open" });
      this.root = root;
      this.title = h("h2", { id: "finconn-title", class: "title", tabIndex: -1 });
      this.backButton = h("button", { type: "button", class: "icon back", "aria-label": "Back", onclick: () => this.back() }, "←");
      this.body = h("div", { class: "body" });
      this.footer = h("div", { class: "footer" });
      // A native modal <dialog>: the browser keeps focus and clicks inside it, makes the page
      // behind it inert for assistive technology, and turns Escape into a cancel event.
      this.dialog = h(
        "dialog",
        {
          class: "dialog",
          "aria-labelledby": "finconn-title",
          oncancel: (event) => this.onCancel(event),
          onclose: () => this.close(),
          onkeydown: (event) => this.onTab(event),
        },
        h(
          "div",
          { class: "top" },
          this.backButton,
          h("span", { class: "merchant" }, this.session.merchant_name || "Sandbox"),
          h("span", { class: "badge", title: "Nothing here touches a real bank." }, "Sandbox"),
          h("button", { type: "button", class: "icon close", "aria-label": "Close", onclick: () => this.close() }, "×"),
        ),
        h("div", { class: "content" }, this.title, this.body),
        this.footer,
      );
      const sheet = h("link", { rel: "stylesheet", href: new URL("static/finconn-sandbox.css", base).href });
      // Shown once styled, so that it never flashes unstyled.
      const show = () => {
        this.dialog.showModal();
        this.focusFirst();
      };
      sheet.addEventListener("load", show, { once: true });
      sheet.addEventListener("error", show, { once: true });
      root.append(sheet, this.dialog);
      // A modal dialog does not stop the page behind it from scrolling.
      this.overflow = document.documentElement.style.overflow;
      document.documentElement.style.overflow = "hidden";
      document.body.append(this.host);
    }

    onCancel(event) {
      // Escape means "close the linking window", which must tell the sandbox first.
      event.preventDefault();
      this.close();
    }

    onTab(event) {
      // Chromium lets Tab leave a modal dialog for the browser's own controls: wrap instead,
      // so that keyboard users stay in the linking window as they would in Stripe's.
      if (event.key !== "Tab") return;
      const items = [...this.dialog.querySelectorAll("button, input, [href], [tabindex='0']")].filter(
        (el) => !el.disabled && el.checkVisibility(),
      );
      const edge = event.shiftKey ? items[0] : items[items.length - 1];
      if (edge && this.root.activeElement === edge) {
        event.preventDefault();
        (event.shiftKey ? items[items.length - 1] : items[0]).focus();
      }
    }

    focusFirst() {
      const primary = this.footer.querySelector(".primary:not(:disabled)");
      const target = this.body.querySelector("[autofocus]:not(:disabled)") || primary || this.title;
      target.focus();
    }

    finish(result) {
      if (this.dialog.open) this.dialog.close();
      document.documentElement.style.overflow = this.overflow;
      this.host.remove();
      if (this.returnFocus && this.returnFocus.focus) this.returnFocus.focus();
      this.resolve(result);
    }

    async close() {
      if (this.closing) return;
      this.closing = true;
      if (this.payment) return this.finish(await this.intentOutcome());
      if (this.linked) return this.finish({ financialConnectionsSession: { id: this.session.id, accounts: this.linked } });
      await api("cancel", this.secret, {});
      this.finish({ financialConnectionsSession: { id: this.session.id, accounts: [] } });
    }

    /** What collectBankAccountFor* resolves: the intent with its new PaymentMethod, or as it was. */
    async intentOutcome() {
      const { key, secret, expand } = this.payment;
      if (this.attached) return { [key]: this.attached };
      if (!this.linked) await api("cancel", this.secret, {});
      const query = (expand || []).map((e) => `expand[]=${encodeURIComponent(e)}`).join("&");
      const intent = await api(`intent${query ? `?${query}` : ""}`, secret);
      return intent.error ? { error: intent.error } : { [key]: intent };
    }

    go(step, remember = true) {
      if (remember && this.step) this.history.push(this.step);
      this.step = step;
      this.render();
    }

    back() {
      if (!this.history.length) return;
      this.step = this.history.pop();
      this.render();
    }

    render() {
      this.body.replaceChildren();
      this.footer.replaceChildren();
      this.error = null;
      this.dialog.dataset.step = this.step;
      this.backButton.hidden = !this.history.length || this.step === "success" || this.step === "failed";
      this[`render_${this.step}`]();
      if (this.dialog.open) this.focusFirst();
    }

    setTitle(text) {
      this.title.textContent = text;
    }

    primary(label, onclick, disabled = false) {
      const button = h("button", { type: "button", class: "primary", onclick, disabled }, label);
      this.footer.append(button);
      return button;
    }

    secondary(label, onclick) {
      this.footer.append(h("button", { type: "button", class: "secondary", onclick }, label));
    }

    showError(message) {
      if (!this.error) {
        this.error = h("p", { id: "fc-error", class: "error", role: "alert" });
        this.body.prepend(this.error);
      }
      this.error.textContent = message;
    }

    /**
     * True when every required field has a value. Otherwise marks the empty ones invalid, shows
     * `message` in the modal's alert (read out by screen readers) and focuses the first.
     */
    filled(inputs, message) {
      const empty = inputs.filter((input) => !input.value.trim());
      for (const input of inputs) {
        if (empty.includes(input)) {
          input.setAttribute("aria-invalid", "true");
          input.setAttribute("aria-describedby", "fc-error");
        } else {
          input.removeAttribute("aria-invalid");
          input.removeAttribute("aria-describedby");
        }
      }
      if (!empty.length) return true;
      this.showError(message);
      empty[0].focus();
      return false;
    }

    /** Run a sandbox call with the dialog marked busy; returns null after showing an error. */
    async call(path, body) {
      this.dialog.setAttribute("aria-busy", "true");
      for (const b of this.footer.querySelectorAll("button")) b.disabled = true;
      const result = await api(path, this.secret, body);
      this.dialog.removeAttribute("aria-busy");
      if (this.closing) return null;
      for (const b of this.footer.querySelectorAll("button")) b.disabled = false;
      if (result.error) {
        this.showError(result.error.message || "Something went wrong.");
        return null;
      }
      return result;
    }

    render_consent() {
      const merchant = this.session.merchant_name || "This app";
      this.setTitle(`${merchant} uses Stripe to link your accounts`);
      const requested = (this.session.permissions || []).filter((p) => PERMISSIONS[p]);
      this.body.append(
        h(
          "div",
          { class: "hero", "aria-hidden": "true" },
          h("span", { class: "logo logo--big", style: "--logo:#0a2540" }, initials(merchant) || "M"),
          h("span", { class: "dots" }, "•••"),
          h("span", { class: "logo logo--big", style: "--logo:#635bff" }, bankIcon()),
        ),
        h("p", { class: "lede" }, `${merchant} will be able to see the following data from the accounts you choose:`),
        h(
          "ul",
          { class: "permissions" },
          h("li", {}, h("strong", {}, "Account details"), h("span", {}, "Account name, type and last four digits")),
          requested.map((p) => h("li", { "data-permission": p }, h("strong", {}, PERMISSIONS[p][0]), h("span", {}, PERMISSIONS[p][1]))),
        ),
        h("p", { class: "fine" }, "Sandbox mode: the banks, logins and data below are simulated. Nothing leaves this app."),
      );
      this.primary("Agree and continue", () => this.go("institutions"));
    }

    async render_institutions() {
      this.setTitle("Select your bank");
      const results = h("div", { class: "institutions", role: "list" });
      const search = h("input", {
        type: "search",
        class: "search",
        placeholder: "Search sandbox banks",
        "aria-label": "Search for your bank",
        autocomplete: "off",
        autofocus: true,
      });
      const testList = h("div", { class: "institutions", role: "list", "aria-labelledby": "finconn-test-banks" });
      const testBanks = h(
        "section",
        { class: "test-banks", hidden: true },
        h("h3", { id: "finconn-test-banks" }, "Test institutions"),
        h("p", { class: "fine" }, "One case each: owners, accounts without ACH, outages, deactivation."),
        testList,
      );
      this.body.append(search, results, testBanks);
      let ticket = 0;
      const show = async () => {
        const mine = ++ticket;
        const query = search.value.trim();
        const data = await api(`institutions?q=${encodeURIComponent(query)}`, this.secret);
        if (mine !== ticket || this.step !== "institutions") return;
        if (data.error) return this.showError(data.error.message);
        // Without a search: the featured banks as tiles, then every other test bank (the
        // failure and deactivation paths) in a list that says what each one simulates.
        const list = query ? data.data : data.data.filter((i) => i.featured);
        if (!query) search.placeholder = `Search all ${data.data.length} sandbox banks`;
        results.classList.toggle("institutions--grid", !query);
        results.replaceChildren(...list.map((institution) => bankItem(institution, Boolean(query))));
        if (!list.length) results.append(h("p", { class: "empty" }, `No sandbox bank matches “${query}”.`));
        const others = query ? [] : data.data.filter((i) => !i.featured);
        testBanks.hidden = !others.length;
        testList.replaceChildren(...others.map((institution) => bankItem(institution, true)));
      };
      const bankItem = (institution, described) => {
        const hint = described && institution.description;
        const id = `finconn-bank-${institution.id}`;
        return h(
          "div",
          { role: "listitem" },
          h(
            "button",
            {
              type: "button",
              class: "institution",
              "data-institution": institution.id,
              "aria-describedby": hint ? id : null,
              onclick: () => this.choose(institution),
            },
            logo(institution),
            h(
              "span",
              { class: "institution__text" },
              h("span", { class: "name" }, institution.name),
              hint ? h("span", { class: "hint", id, "aria-hidden": "true" }, hint) : null,
            ),
          ),
        );
      };
      search.addEventListener("input", show);
      if (this.payment) {
        // Right under the featured banks: the test institutions' list must not push it away.
        testBanks.before(
          h("button", { type: "button", class: "link manual", onclick: () => this.go("manual") }, "Enter bank details manually"),
        );
      }
      await show();
    }

    choose(institution) {
      this.institution = institution;
      if (DOWN[institution.status]) this.go("down");
      else this.go(institution.auth === "oauth" ? "oauth" : "login");
    }

    render_down() {
      const [headline, fallback] = DOWN[this.institution.status];
      const text = this.institution.status_message || fallback;
      this.dialog.dataset.reason = this.institution.status;
      this.setTitle(`${this.institution.name} ${headline}`);
      this.body.append(h("div", { class: "hero" }, logo(this.institution, true)), h("p", { class: "lede" }, text));
      this.primary("Select another bank", () => this.back());
    }

    render_oauth() {
      const bank = this.institution.name;
      this.setTitle(`Continue to ${bank}`);
      this.body.append(
        h("div", { class: "hero" }, logo(this.institution, true)),
        h("p", { class: "lede" }, `You'll log in at ${bank} and choose the accounts to share. Then you'll come back here.`),
      );
      this.primary(`Continue to ${bank}`, () => this.go("bank"));
    }

    render_bank() {
      const bank = this.institution.name;
      this.setTitle(`${bank}: authorize access`);
      this.body.append(
        h(
          "div",
          { class: "bank-frame", style: `--logo:${color(this.institution)}` },
          h("div", { class: "bank-bar" }, logo(this.institution), h("span", {}, `${bank} · secure sign-in (simulated)`)),
          h(
            "p",
            {},
            `You're signed in at ${bank}. Allow ${this.session.merchant_name || "this app"} to access your accounts through Stripe?`,
          ),
        ),
      );
      this.primary("Authorize", async () => {
        const result = await this.call("authorize", { institution: this.institution.id });
        if (result) this.afterLogin(result);
      });
      this.secondary("Cancel", () => this.back());
    }

    render_login() {
      const bank = this.institution.name;
      this.setTitle(`Log in to ${bank}`);
      const username = h("input", { id: "fc-username", name: "username", autocomplete: "off", autofocus: true, required: true });
      const password = h("input", { id: "fc-password", name: "password", type: "password", autocomplete: "off", required: true });
      const form = h(
        "form",
        {
          class: "form",
          noValidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            if (!this.filled([username, password], "Enter your username and password.")) return;
            const result = await this.call("login", {
              institution: this.institution.id,
              username: username.value,
              password: password.value,
            });
            if (result) this.afterLogin(result);
          },
        },
        h("div", { class: "bank-bar", style: `--logo:${color(this.institution)}` }, logo(this.institution), h("span", {}, bank)),
        h("label", { htmlFor: "fc-username" }, "Username"),
        username,
        h("label", { htmlFor: "fc-password" }, "Password"),
        password,
        h(
          "p",
          { class: "fine" },
          "Sandbox: any username and password log in. Type a magic word as the password to test other paths: ",
          ["mfa", "options", "security_question", "error", "incorrect"].map((w, i) => [i ? ", " : "", h("code", {}, w)]),
          ".",
        ),
        h("button", { type: "submit", hidden: true, tabIndex: -1 }),
      );
      this.body.append(form);
      this.primary("Log in", () => form.requestSubmit());
    }

    afterLogin(result) {
      if (result.next === "accounts") {
        this.accounts = result.accounts || [];
        this.go("accounts");
      } else if (result.next === "incorrect") {
        this.showError(result.message || "The username or password is incorrect. Try again.");
        const retry = this.body.querySelector("#fc-password, #fc-answer");
        if (retry) {
          retry.value = "";
          retry.focus();
        }
      } else if (result.next === "failed") {
        this.failure = result.message;
        this.go("failed");
      } else {
        this.challenge = result;
        this.go(result.next);
      }
    }

    challengeForm(fieldLabel, extra, hint, inputAttrs = {}) {
      const input = h("input", { id: "fc-answer", name: "answer", autocomplete: "off", autofocus: true, required: true, ...inputAttrs });
      const form = h(
        "form",
        {
          class: "form",
          noValidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            if (!this.filled([input], "Enter an answer to continue.")) return;
            const result = await this.call("login", { institution: this.institution.id, answer: input.value });
            if (result) this.afterLogin(result);
          },
        },
        extra,
        h("label", { htmlFor: "fc-answer" }, fieldLabel),
        input,
        h("p", { class: "fine" }, hint),
        h("button", { type: "submit", hidden: true, tabIndex: -1 }),
      );
      this.body.append(form);
      this.primary("Continue", () => form.requestSubmit());
    }

    render_mfa() {
      this.setTitle("Enter your verification code");
      this.challengeForm(
        "Verification code",
        [h("p", { class: "lede" }, this.challenge.prompt || "Enter the code we sent to your phone.")],
        "Sandbox: any code works.",
        { inputMode: "numeric", autocomplete: "one-time-code" },
      );
    }

    render_security_question() {
      this.setTitle("Answer your security question");
      this.challengeForm(
        this.challenge.prompt || "What was the name of your first pet?",
        [],
        "Sandbox: any answer works.",
      );
    }

    render_options() {
      this.setTitle("Verify it's you");
      const options = this.challenge.options || ["Text message", "Email"];
      const form = h(
        "form",
        {
          class: "form",
          onsubmit: (event) => {
            event.preventDefault();
            const choice = form.querySelector("input:checked");
            // Choosing where the code goes is local; the code itself is checked by the bank.
            this.challenge = { prompt: `Enter the 6-digit code we sent: ${choice ? choice.value : options[0]}.` };
            this.go("mfa");
          },
        },
        h(
          "fieldset",
          { class: "choices" },
          h("legend", {}, this.challenge.prompt || "Where should we send your verification code?"),
          options.map((option, i) =>
            h(
              "label",
              { class: "choice" },
              h("input", { type: "radio", name: "option", value: option, checked: i === 0, autofocus: i === 0 }),
              h("span", {}, option),
            ),
          ),
        ),
      );
      this.body.append(form);
      this.primary("Send code", () => form.requestSubmit());
    }

    render_failed() {
      this.setTitle(`${this.institution ? this.institution.name : "Your bank"} could not log you in`);
      this.body.append(
        h("p", { class: "lede" }, this.failure || "Something went wrong at your bank."),
      );
      this.primary("Select another bank", () => {
        this.history = this.history.slice(0, this.history.indexOf("institutions") + 1);
        this.back();
      });
      this.secondary("Close", () => this.close());
    }

    render_accounts() {
      const single = Boolean(this.payment);
      this.setTitle(single ? "Select an account" : "Select accounts to link");
      const boxes = [];
      const link = () => this.footer.querySelector(".primary");
      const update = () => {
        link().disabled = !boxes.some((b) => b.checked);
      };
      const rows = this.accounts.map((account) => {
        const id = account.key || account.id;
        const unsupported = account.selectable === false || Boolean(account.disabled_reason);
        const box = h("input", {
          type: single ? "radio" : "checkbox",
          name: "account",
          value: id,
          checked: !unsupported && (!single || !boxes.length),
          disabled: unsupported,
          onchange: update,
        });
        if (!unsupported) boxes.push(box);
        return h(
          "label",
          { class: `account${unsupported ? " account--disabled" : ""}`, "data-account": id },
          box,
          h(
            "span",
            { class: "account-text" },
            h("span", { class: "name" }, account.display_name || "Account"),
            h("span", { class: "meta" }, [label(account.subcategory), mask(account.last4)].filter(Boolean).join(" · ")),
            unsupported ? h("span", { class: "reason" }, account.disabled_reason || "Not supported") : null,
          ),
        );
      });
      this.body.append(h("fieldset", { class: "accounts" }, h("legend", { class: "sr" }, "Accounts"), rows));
      if (!this.accounts.length) this.body.append(h("p", { class: "empty" }, "This bank has no accounts to share."));
      if (boxes[0]) boxes[0].autofocus = true;
      this.primary(single ? "Link account" : "Link accounts", async () => {
        const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
        const result = await this.call("complete", { institution: this.institution.id, accounts: chosen });
        if (!result) return;
        if (single && !(await this.attach({ session: this.payment.sessionId, account: (result.accounts[0] || {}).id }))) {
          this.linked = result.accounts;
          return;
        }
        // In the order the bank listed them (and the holder saw them), whatever the API's order.
        const rank = (a) => this.accounts.findIndex((b) => b.display_name === a.display_name && b.last4 === a.last4);
        this.linked = (result.accounts || []).slice().sort((a, b) => rank(a) - rank(b));
        this.go("success");
      });
      update();
    }

    /** Give the intent the chosen account (or typed details) as its PaymentMethod. */
    async attach(body) {
      const { secret, billing, expand } = this.payment;
      this.dialog.setAttribute("aria-busy", "true");
      for (const b of this.footer.querySelectorAll("button")) b.disabled = true;
      const result = await api("intent/attach", secret, { ...body, billing_details: billing, expand });
      this.dialog.removeAttribute("aria-busy");
      for (const b of this.footer.querySelectorAll("button")) b.disabled = false;
      if (result.error) {
        this.showError(result.error.message || "The bank account could not be added.");
        return false;
      }
      this.attached = result;
      return true;
    }

    render_manual() {
      this.setTitle("Enter bank details");
      const field = (id, text, attrs = {}) => {
        const input = h("input", { id, name: id, autocomplete: "off", inputMode: "numeric", spellcheck: false, ...attrs });
        const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
        return { input, error, row: h("div", { class: "field" }, h("label", { htmlFor: id }, text), input, error) };
      };
      const routing = field("fc-routing", "Routing number", { autofocus: true });
      const account = field("fc-account-number", "Account number");
      const confirm = field("fc-account-confirm", "Confirm account number");
      const radios = (name, legend, options) =>
        h(
          "fieldset",
          { class: "choices choices--row" },
          h("legend", {}, legend),
          options.map(([value, text], i) =>
            h("label", { class: "choice" }, h("input", { type: "radio", name, value, checked: i === 0 }), h("span", {}, text)),
          ),
        );
      const digits = (input) => input.value.replace(/[\s-]/g, "");
      const rules = [
        [routing, () => {
          const v = digits(routing.input);
          if (!v) return "Enter the routing number.";
          if (!/^\d{9}$/.test(v)) return "A routing number has 9 digits.";
          if (!abaValid(v)) return "This routing number is not valid. Check it against a check or your bank's website.";
          return "";
        }],
        [account, () => {
          const v = digits(account.input);
          if (!v) return "Enter the account number.";
          if (!/^\d{4,17}$/.test(v)) return "An account number has 4 to 17 digits.";
          return "";
        }],
        [confirm, () => {
          const v = digits(confirm.input);
          if (!v) return "Enter the account number again.";
          return v === digits(account.input) ? "" : "The account numbers don't match.";
        }],
      ];
      const check = () => {
        let first = null;
        for (const [f, rule] of rules) {
          const message = rule();
          f.error.textContent = message;
          f.error.hidden = !message;
          if (message) {
            f.input.setAttribute("aria-invalid", "true");
            f.input.setAttribute("aria-describedby", `${f.input.id}-error`);
            first = first || f;
          } else {
            f.input.removeAttribute("aria-invalid");
            f.input.removeAttribute("aria-describedby");
          }
        }
        return first;
      };
      const form = h(
        "form",
        {
          class: "form",
          noValidate: true,
          onsubmit: async (event) => {
            event.preventDefault();
            const wrong = check();
            if (wrong) {
              const names = rules.filter(([f]) => !f.error.hidden).map(([f]) => f.row.querySelector("label").textContent.toLowerCase());
              this.showError(names.length > 1 ? `Check the ${names.length} highlighted fields: ${names.join(", ")}.` : wrong.error.textContent);
              wrong.input.focus();
              return;
            }
            if (this.error) this.error.remove();
            this.error = null;
            const value = (name) => form.querySelector(`input[name=${name}]:checked`).value;
            const ok = await this.attach({
              us_bank_account: {
                routing_number: digits(routing.input),
                account_number: digits(account.input),
                account_holder_type: value("holder"),
                account_type: value("type"),
              },
            });
            if (!ok) return;
            const number = digits(account.input);
            this.typed = { bank: `${label(value("type"))} account`, last4: number.slice(-4) };
            this.go("success");
          },
        },
        routing.row,
        account.row,
        confirm.row,
        radios("holder", "Account holder", [["individual", "Individual"], ["company", "Company"]]),
        radios("type", "Account type", [["checking", "Checking"], ["savings", "Savings"]]),
        h(
          "p",
          { class: "fine" },
          "Two small deposits verify the account in 1 to 2 business days. Sandbox: routing number ",
          h("code", {}, "110000000"),
          " with account number ",
          h("code", {}, "000123456789"),
          " succeeds.",
        ),
        h("button", { type: "submit", hidden: true, tabIndex: -1 }),
      );
      this.body.append(form);
      this.primary("Continue", () => form.requestSubmit());
    }

    render_success() {
      if (this.payment) return this.render_attached();
      this.setTitle("Your accounts were linked");
      this.body.append(
        h("div", { class: "hero" }, h("span", { class: "check", "aria-hidden": "true" }, "✓")),
        h(
          "ul",
          { class: "linked" },
          this.linked.map((a) => h("li", {}, h("span", { class: "name" }, a.display_name), h("span", { class: "meta" }, mask(a.last4)))),
        ),
        h("p", { class: "lede" }, `${this.session.merchant_name || "The app"} can now use the data you shared.`),
      );
      this.primary("Done", () => this.close());
    }

    render_attached() {
      const manual = !this.linked;
      const rows = manual
        ? [{ display_name: this.typed.bank, last4: this.typed.last4 }]
        : this.linked;
      this.setTitle(manual ? "Bank details saved" : "Your account was linked");
      this.body.append(
        h("div", { class: "hero" }, h("span", { class: "check", "aria-hidden": "true" }, "✓")),
        h("ul", { class: "linked" }, rows.map((a) => h("li", {}, h("span", { class: "name" }, a.display_name), h("span", { class: "meta" }, mask(a.last4))))),
        h(
          "p",
          { class: "lede" },
          manual
            ? "Two small deposits will arrive in your account in 1 to 2 business days, with instructions to verify them by email."
            : `${this.session.merchant_name || "The app"} can now use this account for payments.`,
        ),
      );
      this.primary("Done", () => this.close());
    }
  }

  class IntegrationError extends Error {
    constructor(message) {
      super(message);
      this.name = "IntegrationError";
    }
  }

  const INTENTS = {
    setup: { prefix: "seti_", key: "setupIntent", name: "SetupIntent" },
    payment: { prefix: "pi_", key: "paymentIntent", name: "PaymentIntent" },
  };

  function checkSecret(method, kind, secret) {
    const { prefix, name } = INTENTS[kind];
    if (typeof secret !== "string" || !new RegExp(`^${prefix}[^_\\s]+_secret_\\S+$`).test(secret)) {
      throw new IntegrationError(
        `Invalid value for ${method}: clientSecret should be the client_secret of a ${name}, of the form ${prefix}..._secret_.... You specified: ${JSON.stringify(secret)}.`,
      );
    }
  }

  function checkObject(method, name, value, allowed) {
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      throw new IntegrationError(`Invalid value for ${method}: ${name} should be an object. You specified: ${JSON.stringify(value)}.`);
    }
    const unknown = Object.keys(value).filter((k) => !allowed.includes(k));
    if (unknown.length) {
      throw new IntegrationError(`Invalid value for ${method}: ${name} has unrecognized ${unknown.length > 1 ? "keys" : "key"} ${unknown.join(", ")}; it takes ${allowed.join(", ")}.`);
    }
  }

  const outcome = (kind, result) => (result.error ? { error: result.error } : { [INTENTS[kind].key]: result });

  function collectBankAccount(kind, method, options) {
    checkObject(method, "the options", options, ["clientSecret", "params", "expand"]);
    checkSecret(method, kind, options.clientSecret);
    const params = options.params;
    if (params === undefined) throw new IntegrationError(`Missing value for ${method}: params should be an object.`);
    checkObject(method, "params", params, ["payment_method_type", "payment_method_data"]);
    if (params.payment_method_type !== "us_bank_account") {
      throw new IntegrationError(
        `Invalid value for ${method}: params.payment_method_type should be "us_bank_account". You specified: ${JSON.stringify(params.payment_method_type)}.`,
      );
    }
    const data = params.payment_method_data || {};
    checkObject(method, "params.payment_method_data", data, ["billing_details", "metadata"]);
    const billing = data.billing_details;
    if (!billing || typeof billing.name !== "string" || !billing.name.trim()) {
      throw new IntegrationError(`Missing value for ${method}: params.payment_method_data.billing_details.name should be the account holder's name.`);
    }
    const expand = options.expand;
    if (expand !== undefined && !(Array.isArray(expand) && expand.every((e) => typeof e === "string"))) {
      throw new IntegrationError(`Invalid value for ${method}: expand should be an array of strings, e.g. ["payment_method"].`);
    }
    const sent = {};
    for (const key of ["name", "email", "phone"]) if (typeof billing[key] === "string" && billing[key]) sent[key] = billing[key];
    return (async () => {
      if (document.querySelector("[data-finconn-sandbox]")) {
        return { error: { type: "invalid_request_error", message: "A bank account window is already open." } };
      }
      const collect = await api("intent/collect", options.clientSecret, { billing_details: sent });
      if (collect.error) return { error: collect.error };
      const session = await api("session", collect.client_secret);
      if (session.error) return { error: session.error };
      const payment = { kind, key: INTENTS[kind].key, secret: options.clientSecret, billing: sent, expand, sessionId: collect.id };
      return new Promise((resolve) => new Modal(session, collect.client_secret, resolve, payment));
    })();
  }

  function confirmUsBankAccount(kind, method, clientSecret, data) {
    checkSecret(method, kind, clientSecret);
    const body = {};
    if (data !== undefined) {
      checkObject(method, "data", data, ["payment_method", "return_url"]);
      const pm = data.payment_method;
      if (typeof pm === "string") body.payment_method = pm;
      else if (pm !== undefined) {
        checkObject(method, "data.payment_method", pm, ["us_bank_account", "billing_details", "metadata"]);
        if (!pm.billing_details || !pm.billing_details.name) {
          throw new IntegrationError(`Missing value for ${method}: data.payment_method.billing_details.name should be the account holder's name.`);
        }
        body.payment_method = pm;
      }
    }
    return api("intent/confirm", clientSecret, body).then((result) => outcome(kind, result));
  }

  function verifyMicrodeposits(kind, method, clientSecret, data) {
    checkSecret(method, kind, clientSecret);
    checkObject(method, "data", data, ["amounts", "descriptor_code"]);
    const hasAmounts = data.amounts !== undefined;
    if (hasAmounts === (data.descriptor_code !== undefined)) {
      throw new IntegrationError(`Invalid value for ${method}: pass exactly one of amounts (two integers, in cents) or descriptor_code (e.g. "SM11AA").`);
    }
    if (hasAmounts && !(Array.isArray(data.amounts) && data.amounts.length === 2 && data.amounts.every(Number.isInteger))) {
      throw new IntegrationError(`Invalid value for ${method}: amounts should be an array of two integers, in cents. You specified: ${JSON.stringify(data.amounts)}.`);
    }
    if (!hasAmounts && typeof data.descriptor_code !== "string") {
      throw new IntegrationError(`Invalid value for ${method}: descriptor_code should be a string such as "SM11AA".`);
    }
    return api("intent/verify", clientSecret, data).then((result) => outcome(kind, result));
  }

  function Stripe(publishableKey) {
    if (typeof publishableKey !== "string" || !publishableKey) {
      throw new TypeError(`Stripe(): expected a publishable key such as "pk_test_...", got ${JSON.stringify(publishableKey)}.`);
    }
    return {
      async collectFinancialConnectionsAccounts(options) {
        const clientSecret = options && options.clientSecret;
        if (typeof clientSecret !== "string" || !clientSecret) {
          throw new TypeError("collectFinancialConnectionsAccounts: expected {clientSecret: string}, the session's client_secret.");
        }
        if (document.querySelector("[data-finconn-sandbox]")) {
          return { error: { type: "invalid_request_error", message: "A Financial Connections window is already open." } };
        }
        const session = await api("session", clientSecret);
        if (session.error) return { error: session.error };
        return new Promise((resolve) => new Modal(session, clientSecret, resolve));
      },
      collectBankAccountForSetup: (options) => collectBankAccount("setup", "collectBankAccountForSetup", options),
      collectBankAccountForPayment: (options) => collectBankAccount("payment", "collectBankAccountForPayment", options),
      confirmUsBankAccountSetup: (secret, data) => confirmUsBankAccount("setup", "confirmUsBankAccountSetup", secret, data),
      confirmUsBankAccountPayment: (secret, data) => confirmUsBankAccount("payment", "confirmUsBankAccountPayment", secret, data),
      verifyMicrodepositsForSetup: (secret, data) => verifyMicrodeposits("setup", "verifyMicrodepositsForSetup", secret, data),
      verifyMicrodepositsForPayment: (secret, data) => verifyMicrodeposits("payment", "verifyMicrodepositsForPayment", secret, data),
    };
  }

  window.FinConnSandbox = { Stripe };
  // Never replace a real Stripe.js the page loaded for something else.
  if (!window.Stripe) window.Stripe = Stripe;
})();
