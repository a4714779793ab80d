/*
 * Pocketbook's page script: refresh and disconnect through Flask-FinConn's JSON routes, and
 * keep the page current when a refresh finishes or the widget links accounts.
 *
 * A refresh answers 202 at once and the bank finishes it later (about a second in the
 * sandbox); the webhook then updates the account, so the script polls GET /accounts/<id>
 * until the refreshed feature is no longer pending and writes the new values in place.
 */
(() => {
  "use strict";

  const endpoint = (document.body.dataset.endpoint || "/finconn").replace(/\/+$/, "");
  const announcer = document.getElementById("announcer");
  const POLL_MS = 500;
  const WAIT_MS = 20000;
  const LABELS = { balance: "Balance", ownership: "Owners", transactions: "Transactions" };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function announce(text) {
    if (!announcer) return;
    // Clearing first makes screen readers repeat a message identical to the last one.
    announcer.textContent = "";
    setTimeout(() => {
      announcer.textContent = text;
    }, 50);
  }

  function money(amount, currency) {
    const format = new Intl.NumberFormat("en-US", { style: "currency", currency: currency.toUpperCase() });
    return format.format(amount / 10 ** format.resolvedOptions().maximumFractionDigits);
  }

  /** A time in the viewer's own time zone, as "Nov 25, 2026, 10:42 AM PST". */
  function when(iso, seconds = false) {
    return new Intl.DateTimeFormat("en-US", {
      month: "short",
      day: "numeric",
      year: "numeric",
      hour: "numeric",
      minute: "2-digit",
      second: seconds ? "2-digit" : undefined,
      timeZoneName: "short",
    }).format(new Date(iso));
  }

  /**
   * The server writes times in UTC (it does not know the viewer's zone); rewrite each
   * <time> that carries a clock time into local time. Dates alone (transactions) stay as the
   * bank dated them.
   */
  function localizeTimes(root = document) {
    for (const element of root.querySelectorAll("time[datetime]")) {
      if (!/UTC$/.test(element.textContent.trim())) continue;
      element.title = element.textContent.trim();
      element.textContent = when(element.dateTime, (element.textContent.match(/:/g) || []).length > 1);
    }
  }

  /** The chart's axis labels and point titles (SVG has no <time>), in the viewer's zone. */
  function localizeChart(root = document) {
    const styles = {
      date: { month: "short", day: "numeric", year: "numeric" },
      "day-time": { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" },
      time: { hour: "numeric", minute: "2-digit", timeZoneName: "short" },
    };
    for (const label of root.querySelectorAll("text[data-datetime][data-style]")) {
      const style = styles[label.dataset.style];
      if (style) label.textContent = new Intl.DateTimeFormat("en-US", style).format(new Date(label.dataset.datetime));
    }
    for (const title of root.querySelectorAll("title[data-datetime]")) {
      title.textContent = title.textContent.replace(/ on .* UTC$/, ` on ${when(title.dataset.datetime)}`);
    }
  }

  /** "8 seconds", "2 minutes": how long until `iso`, for cool-down messages. */
  function until(iso) {
    const seconds = Math.max(1, Math.ceil((new Date(iso).getTime() - Date.now()) / 1000));
    if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
    const minutes = Math.ceil(seconds / 60);
    return `${minutes} minute${minutes === 1 ? "" : "s"}`;
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(endpoint + path, init);
    } catch {
      throw new Error("Pocketbook could not be reached. Check your connection and try again.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = new Error((data && data.error && data.error.message) || `The server answered ${response.status}.`);
      error.code = data && data.error && data.error.code;
      error.detail = (data && data.error) || {};
      throw error;
    }
    return data;
  }

  const pending = (account, feature) => {
    const state = account.refresh && account.refresh[feature];
    return Boolean(state && state.status === "pending");
  };

  /** Poll the account until none of `features` is pending; resolves the fresh account. */
  async function settle(id, features, account) {
    const deadline = Date.now() + WAIT_MS;
    let current = account || (await api("GET", `/accounts/${encodeURIComponent(id)}`));
    while (features.some((feature) => pending(current, feature))) {
      if (Date.now() > deadline) {
        throw new Error("The bank is taking longer than usual. Reload the page in a minute to see the result.");
      }
      await sleep(POLL_MS);
      current = await api("GET", `/accounts/${encodeURIComponent(id)}`);
    }
    return current;
  }

  function setMessage(root, text, isError = false) {
    const slot = root.querySelector("[data-field='message']");
    if (!slot) return;
    slot.textContent = text;
    slot.classList.toggle("field-error", isError);
  }

  function setBusy(button, busy) {
    if (!button) return;
    if (busy) {
      button.setAttribute("aria-disabled", "true");
      button.dataset.busy = "1";
    } else {
      button.removeAttribute("aria-disabled");
      delete button.dataset.busy;
    }
  }

  /** Write a fresh Account (JSON) into its dashboard card. */
  function paintCard(card, account) {
    const field = (name) => card.querySelector(`[data-field='${name}']`);
    const balance = account.balance;
    if (balance) {
      field("balance").textContent = money(balance.current, balance.currency);
      field("available").textContent =
        balance.available === null ? "" : `Available ${money(balance.available, balance.currency)}`;
      field("as-of").replaceChildren("as of ", Object.assign(document.createElement("time"), {
        dateTime: balance.as_of,
        textContent: when(balance.as_of),
      }));
    }
    const status = field("status");
    status.textContent = account.status.charAt(0).toUpperCase() + account.status.slice(1);
    status.className = `badge badge--${account.status}`;
  }

  /** Swap a part of the page for the same part of a fresh copy of `url`. */
  async function reloadPart(selector, url = window.location.href) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error(`The page could not be reloaded (${response.status}).`);
    const html = await response.text();
    const fresh = url === window.location.href
      ? new DOMParser().parseFromString(html, "text/html").querySelector(selector)
      : Object.assign(document.createElement("div"), { innerHTML: html });
    const target = document.querySelector(selector);
    if (!fresh || !target) return;
    target.replaceChildren(...fresh.childNodes);
    watchPending();
  }

  const reloadAccounts = () => {
    const list = document.getElementById("accounts");
    return list ? reloadPart("#accounts", list.dataset.listUrl) : reloadPart("#account-page");
  };

  /**
   * Wait for a refresh to settle and show its result. `asked` is false for refreshes the
   * page found running when drawn (the prefetch after linking): those update the figures
   * quietly, since nobody clicked anything.
   */
  async function finish(root, features, account, button, asked = true) {
    const id = root.dataset.account;
    const fresh = await settle(id, features, account);
    const failed = features.filter((f) => fresh.refresh && fresh.refresh[f] && fresh.refresh[f].status === "failed");
    const name = root.dataset.name || "the account";
    if (root.matches(".account-card") && (fresh.status !== "active" || fresh.action !== "none")) {
      // The bank cut the account off during the refresh: redraw it with its reconnect prompt.
      await reloadAccounts();
      announce(`${name} needs to be reconnected.`);
    } else if (root.matches(".account-card")) {
      paintCard(root, fresh);
      if (failed.length) {
        setMessage(root, `The bank could not refresh the ${failed.join(", ")} just now. Try again later.`, true);
      } else if (asked) {
        setMessage(root, "Balance updated.");
        announce(`Balance of ${name} updated: ${fresh.balance ? money(fresh.balance.current, fresh.balance.currency) : "none"}.`);
      }
      const list = document.getElementById("accounts");
      const slot = document.querySelector(".total-slot");
      if (list && slot) {
        const response = await fetch(list.dataset.listUrl, { credentials: "same-origin" });
        const copy = Object.assign(document.createElement("div"), { innerHTML: await response.text() });
        const fresh = copy.querySelector(".total-slot");
        if (fresh) slot.replaceChildren(...fresh.childNodes);
      }
    } else {
      await reloadPart("#account-page");
      if (!asked) {
        if (button) setBusy(button, false);
        return;
      }
      const labels = features.map((f) => LABELS[f] || f).join(" and ");
      const page = document.getElementById("account-page");
      setMessage(page, failed.length ? `The bank could not refresh the ${failed.join(", ")} just now.` : `${labels} updated.`, failed.length > 0);
      announce(failed.length ? "The refresh failed." : `${labels} updated.`);
    }
    if (button) setBusy(button, false);
  }

  async function refresh(button) {
    if (button.getAttribute("aria-disabled") === "true") return;
    const root = button.closest("[data-account]");
    const features = button.dataset.features.split(" ");
    setBusy(button, true);
    setMessage(root, "Asking the bank…");
    try {
      const account = await api("POST", `/accounts/${encodeURIComponent(root.dataset.account)}/refresh`, { features });
      await finish(root, features, account, button);
    } catch (error) {
      const message = refreshError(error, features);
      setMessage(root, message, error.code !== "refresh_too_early");
      announce(message);
      setBusy(button, false);
    }
  }

  /** The sentence for a refused refresh; a cool-down says how long to wait, not an ISO time. */
  function refreshError(error, features) {
    const next = error.detail && error.detail.next_refresh_available_at;
    if (error.code !== "refresh_too_early" || !next) return error.message;
    const labels = features.map((f) => LABELS[f] || f).join(" and ");
    return `${labels} ${features.length > 1 ? "were" : "was"} just refreshed; you can refresh again in ${until(next)}.`;
  }

  function disconnect(button) {
    const card = button.closest("[data-account]");
    const dialog = document.getElementById("disconnect-dialog");
    if (!card || !dialog) return;
    dialog.querySelector("[data-field='name']").textContent = card.dataset.name;
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      async () => {
        if (dialog.returnValue !== "confirm") {
          button.focus();
          return;
        }
        setBusy(button, true);
        setMessage(card, "Disconnecting…");
        try {
          await api("POST", `/accounts/${encodeURIComponent(card.dataset.account)}/disconnect`, {});
          await reloadAccounts();
          announce(`${card.dataset.name} is disconnected.`);
          const same = document.querySelector(`[data-account='${card.dataset.account}'] a`);
          if (same) same.focus();
        } catch (error) {
          setMessage(card, error.message, true);
          setBusy(button, false);
        }
      },
      { once: true },
    );
    dialog.showModal();
  }

  /** Follow refreshes that were already running when the page was drawn (prefetch). */
  function watchPending() {
    for (const root of document.querySelectorAll("[data-account][data-pending]")) {
      const features = root.dataset.pending.split(" ");
      delete root.dataset.pending;
      finish(root, features, null, root.querySelector("[data-action='refresh']"), false).catch((error) =>
        setMessage(root, error.message, true),
      );
    }
    for (const button of document.querySelectorAll("#account-page [data-action='refresh'][data-pending]")) {
      const root = button.closest("[data-account]");
      const features = button.dataset.pending.split(" ");
      delete button.dataset.pending;
      finish(root, features, null, button, false).catch((error) => setMessage(root, error.message, true));
    }
    localizeTimes();
    localizeChart();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    if (button.dataset.action === "refresh") refresh(button);
    else if (button.dataset.action === "disconnect") disconnect(button);
  });

  // The verify page: once the deposits check out, the sandbox hint goes and the way on to
  // the pay form appears and takes the focus from the widget's "verified" sentence.
  document.addEventListener("finconn-verify-verified", (event) => {
    if (event.detail.paymentMethod.status !== "verified") return;
    for (const hint of document.querySelectorAll("[data-until-verified]")) hint.remove();
    const next = document.querySelector("[data-when-verified]");
    if (!next) return;
    next.hidden = false;
    next.querySelector("a")?.focus();
  });

  document.addEventListener("finconn-connect-success", (event) => {
    // A bank account saved for payments is the payments page script's business.
    if (event.detail.paymentMethod) return;
    reloadAccounts().catch((error) => announce(error.message));
  });

  watchPending();
})();
