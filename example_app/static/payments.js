/*
 * Pocketbook's payments page: "Use for payments" on linked accounts (the mandate text from
 * Flask-FinConn's GET /mandate, then POST /accounts/<id>/payment-method), what follows the
 * widget's setup flow, one submit per pay form, and a payments list that follows the bank's
 * settlement.
 */
(() => {
  "use strict";

  const page = document.getElementById("payments-page");
  if (!page) return;
  const endpoint = (document.body.dataset.endpoint || "/finconn").replace(/\/+$/, "");
  const message = document.querySelector("[data-field='methods-message']");
  const announcer = document.getElementById("announcer");
  const POLL_MS = 1500;

  function say(text, isError = false) {
    message.textContent = text;
    message.classList.toggle("field-error", isError);
  }

  function announce(text) {
    if (!announcer) return;
    announcer.textContent = "";
    setTimeout(() => {
      announcer.textContent = text;
    }, 50);
  }

  async function useForPayments(button) {
    const row = button.closest("[data-account]");
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    try {
      const [{ mandate_text: text }, { mandate }] = await Promise.all([
        window.FinConn.request(`${endpoint}/mandate`, { method: "GET" }),
        window.FinConn.loadPayments(),
      ]);
      // The dialog names the account, as the person may have linked several.
      if (!(await mandate(text, `Authorize debits from ${row.dataset.label}`))) {
        say("Nothing was set up: you did not accept the authorization.");
        return;
      }
      const url = `${endpoint}/accounts/${encodeURIComponent(row.dataset.account)}/payment-method`;
      await window.FinConn.request(url, { body: { mandate: { accepted: true } } });
      window.location.reload();
    } catch (error) {
      say(error.message || "The account could not be set up for payments. Try again.", true);
    } finally {
      button.removeAttribute("aria-disabled");
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action='use-for-payments']");
    if (button) useForPayments(button);
  });

  document.addEventListener("finconn-connect-success", (event) => {
    const method = event.detail.paymentMethod;
    if (!method) return;
    if (method.status === "requires_verification") {
      window.location.assign(`${window.location.pathname.replace(/\/$/, "")}/methods/${encodeURIComponent(method.id)}/verify`);
    } else {
      window.location.reload();
    }
  });

  document.addEventListener("finconn-connect-exit", (event) => {
    if (event.detail.reason === "mandate_declined") say("Nothing was set up: you did not accept the authorization.");
    else say("No bank account was saved.");
  });

  // One charge per click: the second submit of the same form is refused here, and the
  // server's idempotency key covers what gets past (a reload, a slow network).
  for (const form of document.querySelectorAll(".pay-form")) {
    form.addEventListener("submit", (event) => {
      const submit = form.querySelector("button[type='submit']");
      if (form.dataset.sent) {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "1";
      submit.setAttribute("aria-disabled", "true");
      submit.dataset.busy = "";
    });
  }

  const list = document.getElementById("payment-list");
  async function follow() {
    while (list.querySelector("[data-status='processing']")) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const before = new Map([...list.querySelectorAll("[data-payment]")].map((row) => [row.dataset.payment, row.dataset.status]));
      let html;
      try {
        const response = await fetch(page.dataset.listUrl, { credentials: "same-origin" });
        if (!response.ok) return;
        html = await response.text();
      } catch {
        return;
      }
      list.innerHTML = html;
      for (const row of list.querySelectorAll("[data-payment]")) {
        const was = before.get(row.dataset.payment);
        if (was && was !== row.dataset.status) {
          // "Pocketbook Plus, monthly plan: Paid." or "...: Failed. Your bank returned ..."
          const what = row.querySelector("[data-label='Description']").firstChild.textContent.trim();
          const label = row.querySelector(".badge").textContent.trim();
          const failure = row.querySelector("[data-field='failure']");
          announce(`${what}: ${label}.${failure ? ` ${failure.textContent}` : ""}`);
        }
      }
    }
    // "Payment started ... processing" is no longer true once the bank has settled it.
    document.querySelector("[data-field='started']")?.remove();
  }
  follow();
})();
