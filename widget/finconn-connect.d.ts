/**
 * Types for the Flask-FinConn widget (flask_finconn/static/finconn/finconn-connect.js and the
 * optional finconn-accounts.js).
 *
 * The scripts define <finconn-connect>, <finconn-accounts> and window.FinConn; it has no module exports, so
 * reference this file with `/// <reference path="finconn-connect.d.ts" />` or copy it.
 */

/** What a holder may be asked to share (a subset of the app's FINCONN_PERMISSIONS). */
type FinConnPermission = "balances" | "ownership" | "payment_method" | "transactions";

/** The latest balance; amounts are integers in minor units (cents), signed as Stripe signs them. */
interface FinConnBalance {
  current: number;
  /** The current balance when the bank gives no available balance. */
  available: number;
  currency: string;
  as_of: string;
}

interface FinConnRefreshState {
  status: "pending" | "succeeded" | "failed" | string;
  last_attempted_at: string | null;
  next_refresh_available_at: string | null;
}

/** An account as the extension's routes return it (`GET <endpoint>/accounts`). */
interface FinConnAccount {
  id: string;
  institution_name: string;
  display_name: string | null;
  last4: string | null;
  category: "cash" | "credit" | "investment" | "other" | string;
  subcategory: string;
  status: "active" | "inactive" | "disconnected" | string;
  action: "none" | "relink_required";
  permissions: FinConnPermission[];
  subscriptions: string[];
  balance: FinConnBalance | null;
  refresh: {
    balance: FinConnRefreshState | null;
    ownership: FinConnRefreshState | null;
    transactions: FinConnRefreshState | null;
  };
  linked_at: string;
  updated_at: string;
}

/** The `error` of a finconn-connect-error event, and the fields of a FinConnError. */
interface FinConnErrorDetail {
  /**
   * The server's error code (e.g. `not_authenticated`, `stripe_unavailable`), Stripe's
   * launch error code (`session_expired`, `session_used`), or one of the widget's own:
   * `network_error`, `invalid_response`, `http_<status>`, `stripe_js_load_failed`,
   * `stripe_js_unavailable`, `stripe_js_url_invalid`, `stripe_error`, `flow_in_progress`,
   * `unexpected_error`.
   */
  code: string;
  /** A sentence fit to show the user. */
  message: string;
}

interface FinConnConnectOptions {
  /** Base URL of the extension's routes; default: the script tag's data-endpoint, else "/finconn". */
  endpoint?: string;
  /** Narrow what is asked for; a list or a space/comma separated string. */
  permissions?: FinConnPermission[] | string;
  /** Replace window.fetch (for instrumentation or tests). */
  fetch?: typeof fetch;
}

interface FinConnConnectResult {
  /** The accounts stored by the server, re-read from Stripe. Empty when nothing was linked. */
  accounts: FinConnAccount[];
  /** True when the holder closed the modal. */
  cancelled: boolean;
  /** The Financial Connections session id (`fcsess_...`). */
  session: string;
}

declare class FinConnError extends Error implements FinConnErrorDetail {
  readonly name: "FinConnError";
  readonly code: string;
  readonly message: string;
  /** The underlying failure (a load error event, a TypeError from fetch, ...). */
  readonly cause?: unknown;
}

/**
 * Present-tense names are cancelable "about to" events; unless finconn-connect-start is
 * cancelled, exactly one of success, exit or error follows it.
 */
interface FinConnConnectEventMap {
  /** About to start; cancelable (preventDefault() stops the flow). */
  "finconn-connect-start": CustomEvent<{ permissions: FinConnPermission[] }>;
  /** Accounts were linked and stored. */
  "finconn-connect-success": CustomEvent<{ accounts: FinConnAccount[] }>;
  /** The flow ended with nothing linked: the holder closed the modal, or chose nothing. */
  "finconn-connect-exit": CustomEvent<{ reason: "cancelled" | "no_accounts" }>;
  /** The flow failed; the message is also shown in the element's live region. */
  "finconn-connect-error": CustomEvent<{ error: FinConnErrorDetail }>;
}

/** `<finconn-connect>`: a button that runs the linking flow. Its children are the label. */
declare class FinConnConnectElement extends HTMLElement {
  /** Register the element once (done automatically for "finconn-connect"). */
  static define(tag?: string, registry?: CustomElementRegistry): typeof FinConnConnectElement;
  /** Mirrors the `endpoint` attribute. */
  endpoint: string;
  /** Mirrors the `permissions` attribute (space separated). */
  permissions: FinConnPermission[];
  /** Mirrors the `disabled` attribute; disables the inner button. */
  disabled: boolean;
  /** True while a flow runs (the element has aria-busy="true"). */
  readonly busy: boolean;
  /** The rendered inner <button> (null until the element is first connected). */
  readonly button: HTMLButtonElement | null;
  /** Start a flow as a click does; ignored while busy or disabled. */
  start(): Promise<void>;
  /** The network half of a flow; override in a subclass to customise requests. */
  connect(): Promise<FinConnConnectResult>;
  addEventListener<K extends keyof FinConnConnectEventMap>(
    type: K,
    listener: (this: FinConnConnectElement, event: FinConnConnectEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

/** Each action: a cancelable present-tense event before it, a past-tense one when it is done. */
interface FinConnAccountsEventMap {
  /** The list (re)loaded. */
  "finconn-accounts-loaded": CustomEvent<{ accounts: FinConnAccount[] }>;
  /** About to start a refresh; cancelable. */
  "finconn-accounts-refresh": CustomEvent<{ account: FinConnAccount; features: string[] }>;
  /** The refresh settled (see account.refresh for how) and the row shows it. */
  "finconn-accounts-refreshed": CustomEvent<{ account: FinConnAccount; features: string[] }>;
  /** About to disconnect; cancelable (e.g. to ask for confirmation first). */
  "finconn-accounts-disconnect": CustomEvent<{ account: FinConnAccount }>;
  /** The account is disconnected; `account` is the server's answer. */
  "finconn-accounts-disconnected": CustomEvent<{ account: FinConnAccount }>;
  /** About to open a relink flow; cancelable. */
  "finconn-accounts-relink": CustomEvent<{ account: FinConnAccount }>;
  /** The holder linked accounts again; `account` is the reloaded row. */
  "finconn-accounts-relinked": CustomEvent<{ account: FinConnAccount; accounts: FinConnAccount[] }>;
  /** A row changed (refresh started or settled, disconnected). */
  "finconn-accounts-changed": CustomEvent<{ account: FinConnAccount }>;
  /** @deprecated The 0.1.0 name of finconn-accounts-loaded, fired right after it. */
  "finconn-accounts-load": CustomEvent<{ accounts: FinConnAccount[] }>;
  /** @deprecated The 0.1.0 name of finconn-accounts-changed, fired right after it. */
  "finconn-accounts-change": CustomEvent<{ account: FinConnAccount }>;
  "finconn-accounts-error": CustomEvent<{ error: FinConnErrorDetail }>;
}

/** `<finconn-accounts>`: the holder's linked accounts. Its children are the empty state. */
declare class FinConnAccountsElement extends HTMLElement {
  static define(tag?: string, registry?: CustomElementRegistry): typeof FinConnAccountsElement;
  /** Mirrors the `endpoint` attribute. */
  endpoint: string;
  /** Mirrors the `features` attribute: what Refresh asks for (default ["balance"]). */
  features: Array<"balance" | "ownership" | "transactions">;
  /** The accounts last loaded. */
  readonly accounts: FinConnAccount[];
  /** Reload the list (done on connect and after any finconn-connect-success). */
  load(): Promise<FinConnAccount[]>;
  refresh(account: FinConnAccount): Promise<void>;
  disconnect(account: FinConnAccount): Promise<void>;
  relink(account: FinConnAccount): Promise<void>;
  addEventListener<K extends keyof FinConnAccountsEventMap>(
    type: K,
    listener: (this: FinConnAccountsElement, event: FinConnAccountsEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

interface FinConnRequestOptions {
  method?: "GET" | "POST";
  body?: unknown;
  fetch?: typeof fetch;
}

interface FinConnGlobal {
  /** A JSON request to the extension (CSRF token and JSON body on POST); rejects with a FinConnError. */
  request<T = unknown>(url: string, options?: FinConnRequestOptions): Promise<T>;
  /** The script tag's data-endpoint, else "/finconn". */
  defaultEndpoint: string;
  FinConnAccountsElement?: typeof FinConnAccountsElement;
  /** Run one linking flow. Rejects with a FinConnError; only one flow runs at a time. */
  connect(options?: FinConnConnectOptions): Promise<FinConnConnectResult>;
  /**
   * Load Stripe.js (or the sandbox stand-in) at most once; resolves the Stripe constructor.
   * Any form of Stripe's URL (v3, v3/, v3/stripe.js, <release>/stripe.js) reuses a Stripe.js
   * tag the page already has.
   */
  loadStripe(url: string, sandbox: boolean): Promise<(publishableKey: string) => unknown>;
  /** Milliseconds Stripe.js may take to load before the flow fails (default 30000). */
  stripeTimeout: number;
  FinConnError: typeof FinConnError;
  FinConnConnectElement: typeof FinConnConnectElement;
  /** The installed Flask-FinConn's version, from its package metadata. */
  readonly version: string;
}

interface Window {
  FinConn: FinConnGlobal;
}

interface HTMLElementTagNameMap {
  "finconn-connect": FinConnConnectElement;
  "finconn-accounts": FinConnAccountsElement;
}

/** The events bubble, so a listener on document or any ancestor sees them. */
interface HTMLElementEventMap extends FinConnConnectEventMap, FinConnAccountsEventMap {}
interface DocumentEventMap extends FinConnConnectEventMap, FinConnAccountsEventMap {}
