// The mpc-wallet web console: plain JavaScript over the node's REST API (/api/v1), no
// framework and no build step. Every value from the API reaches the page as text (text nodes,
// textContent, attribute values): never as markup, so a wallet name or an error message that
// holds "<script>" is shown, not run. The node serves this file with a Content-Security-Policy
// that forbids inline script as a second line of defence.
"use strict";

const TOKEN_KEY = "mpc-console-token";
const $ = (id) => document.getElementById(id);

// ---- building the page from values, as text -------------------------------------------

// el("td", {class: "num"}, "12", child): an element with attributes and children; strings
// become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function table(headers, rows, id) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) =>
      c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c instanceof Node ? c : text(c)))))));
}

function num(value) {
  return el("td", { class: "num" }, value === undefined || value === null ? "" : String(value));
}

function time(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

function sats(value) {
  return value === undefined || value === null ? "" : `${Number(value).toLocaleString("en")} sat`;
}

function show(message, kind) {
  const m = $("message");
  m.textContent = message;
  m.className = kind || "";
  m.hidden = !message;
}

// ---- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (!response.ok) {
    let code = String(response.status);
    let message = response.statusText;
    try {
      const error = (await response.json()).error;
      code = error.code;
      message = error.message;
    } catch (_) { /* not the API's error shape */ }
    throw new ApiError(response.status, code, message);
  }
  const type = response.headers.get("Content-Type") || "";
  return type.startsWith("application/json") ? response.json() : response.blob();
}

// The claims of the signed-in token, for display only (the node checks the token).
function claims() {
  try {
    const part = (sessionStorage.getItem(TOKEN_KEY) || "").split(".")[1];
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch (_) {
    return {};
  }
}

// ---- views --------------------------------------------------------------------------------

const views = {
  async health() {
    const h = await api("GET", "/api/v1/cluster/health");
    const incidents = await api("GET", "/api/v1/cluster/incidents?limit=20");
    const list = Array.isArray(incidents) ? incidents : incidents.incidents || [];
    return [
      el("h2", {}, "Cluster"),
      el("p", { id: "cluster-summary" },
        `Node ${h.node} · version ${h.version} · ${h.network} · threshold ${h.threshold} · `,
        el("strong", {}, `${h.live} of ${h.nodes.length} nodes live`)),
      table(["Node", "State", "Last heartbeat", "Version", "Audit log"], h.nodes.map((n) => [
        String(n.node),
        el("span", { class: n.live ? "live" : "down" }, n.live ? "live" : "down"),
        time(n.last_heartbeat_ms),
        text(n.version),
        n.audit ? text(n.audit) : "",
      ]), "nodes"),
      el("h3", {}, "Refused by the mesh since start"),
      el("pre", {}, JSON.stringify(h.refused, null, 1)),
      el("h3", {}, `Incidents (${list.length})`),
      list.length === 0 ? el("p", { class: "muted" }, "No incidents.") :
        table(["When", "Accused", "Reporter", "Kind", "Session", "Detail"], list.map((i) => [
          time(i.at_ms || i.created_at_ms), text(i.accused), text(i.reporter), text(i.kind),
          el("code", {}, text(i.session)), text(i.detail || i.reason),
        ]), "incidents"),
    ];
  },

  async wallets() {
    const wallets = await api("GET", "/api/v1/wallets");
    return [
      el("h2", {}, `Wallets (${wallets.length})`),
      wallets.length === 0 ? el("p", { class: "muted" }, "No wallets yet.") :
        table(["Name", "Id", "Scheme", "Threshold", "Participants", "State", "First address", "Created"],
          wallets.map((w) => [
            el("a", { href: `#wallet/${encodeURIComponent(w.id)}` }, text(w.name)),
            el("code", {}, text(w.id)), `${w.scheme} (${w.script_type})`,
            `${w.threshold} of ${w.participants.length}`, w.participants.join(", "), text(w.state),
            el("code", {}, text(w.first_address)), time(w.created_at * (w.created_at < 1e12 ? 1000 : 1)),
          ]), "wallet-list"),
    ];
  },

  async wallet(id) {
    const w = await api("GET", `/api/v1/wallets/${encodeURIComponent(id)}`);
    const base = `/api/v1/wallets/${encodeURIComponent(id)}`;
    const [addresses, descriptor, utxos] = await Promise.all([
      api("GET", `${base}/addresses?count=10`),
      api("GET", `${base}/descriptor`),
      api("GET", `${base}/utxos?include_spent=true`),
    ]);
    const qr = el("img", { class: "qr", id: "qr", alt: `QR code of ${addresses[0].address}` });
    const caption = el("p", { id: "qr-address" }, el("code", {}, `bitcoin:${addresses[0].address}`));
    const showQr = async (entry) => {
      const blob = await api("GET", `${base}/addresses/${entry.index}/qr`);
      if (qr.src) URL.revokeObjectURL(qr.src);
      qr.src = URL.createObjectURL(blob);
      qr.alt = `QR code of ${entry.address}`;
      caption.replaceChildren(el("code", {}, `bitcoin:${entry.address}`));
    };
    await showQr(addresses[0]);
    const qrButton = (entry) => {
      const b = el("button", { type: "button" }, "QR");
      b.addEventListener("click", () => showQr(entry).catch(failed));
      return b;
    };
    return [
      el("h2", {}, `Wallet ${w.name}`),
      table(["Field", "Value"], [
        ["Id", el("code", {}, text(w.id))], ["Scheme", `${w.scheme} (${w.script_type})`],
        ["Network", text(w.network)], ["Threshold", `${w.threshold} of ${w.participants.length} (nodes ${w.participants.join(", ")})`],
        ["State", text(w.state)], ["Public key", el("code", {}, text(w.public_key))],
        ["xpub", el("code", {}, text(w.xpub))], ["Fingerprint", el("code", {}, text(w.fingerprint))],
      ], "wallet-details"),
      el("h3", {}, "Descriptors (watch-only)"),
      table(["Chain", "Descriptor"], [
        ["receive", el("code", {}, text(descriptor.receive))],
        ["change", el("code", {}, text(descriptor.change))],
      ], "descriptors"),
      el("h3", {}, "Receive addresses"),
      el("div", { class: "card" }, qr, caption),
      table(["Index", "Path", "Address", ""], addresses.map((a) => [
        String(a.index), el("code", {}, text(a.path)), el("code", {}, text(a.address)), qrButton(a),
      ]), "addresses"),
      el("h3", {}, "Registered outputs"),
      el("p", { id: "balance" }, el("strong", {}, `Available: ${sats(utxos.available_sats)}`),
        ` · next change: m/1/${utxos.next_change_index} `, el("code", {}, text(utxos.next_change_address))),
      utxos.utxos.length === 0 ? el("p", { class: "muted" }, "No registered outputs.") :
        table(["Outpoint", "Amount", "Path", "Address", "Origin", "State", "Spent by"],
          utxos.utxos.map((u) => [
            el("code", {}, text(u.outpoint)), num(sats(u.amount_sats)), text(u.path),
            el("code", {}, text(u.address)), text(u.origin), text(u.state), el("code", {}, text(u.spent_by)),
          ]), "utxos"),
    ];
  },

  async pool() {
    const stats = await api("GET", "/api/v1/presignatures/stats");
    const parts = [el("h2", {}, `Presignature pool (node ${stats.node})`)];
    if (stats.wallets.length === 0) parts.push(el("p", { class: "muted" }, "No ECDSA wallets."));
    for (const w of stats.wallets) {
      parts.push(
        el("h3", {}, `Wallet ${w.wallet_id}`),
        el("p", {}, `ready ${w.ready_total} · target ${w.target} · low water ${w.low_water} · max ${w.max} · ` +
          `below low water ${w.below_low_water} · fill ${(w.fill * 100).toFixed(0)} % · used ${w.used_total} ` +
          `(last hour ${w.used_last_hour}) · ${w.leader ? "refill leader" : "not the refill leader"}`),
        w.levels.length === 0 ? el("p", { class: "muted" }, "No presignatures.") :
          table(["Path", "Signers", "Ready", "Consumed"], w.levels.map((l) => [
            text(l.path), l.signers.join(", "), num(l.ready), num(l.consumed),
          ])));
    }
    return parts;
  },

  async approvals() {
    const { requests } = await api("GET", "/api/v1/requests?limit=50");
    const pending = requests.filter((r) => r.state === "pending");
    const parts = [el("h2", {}, `Approvals: ${pending.length} pending`)];
    if (requests.length === 0) parts.push(el("p", { class: "muted" }, "No request has waited for approvals."));
    for (const r of requests) {
      const approvals = r.decisions.filter((d) => d.decision === "approve").length;
      parts.push(el("div", { class: "card request", "data-request": r.request_id },
        el("h3", {}, `Request ${r.request_id}: ${r.state}`),
        el("p", {}, `${approvals} of ${r.required} approvals · created ${time(r.created_at_ms)} · expires ${time(r.expires_at_ms)}`),
        el("p", {}, "An approver signs exactly this transaction:"),
        table(["Field", "Value"], [
          ["Request id", el("code", {}, text(r.request_id))],
          ["Wallets", r.wallet_ids.join(", ")],
          ["Txid", el("code", {}, text(r.txid))],
          ["Fee", sats(r.fee_sats)],
          ["Expires", time(r.expires_at_ms)],
        ]),
        table(["Output", "Amount", "Script (hex)"], r.outputs.map((o, i) => [
          String(i), num(sats(o.amount_sats)), el("code", {}, text(o.script_pubkey)),
        ])),
        r.decisions.length === 0 ? null :
          table(["Approver", "Decision", "Key", "When"], r.decisions.map((d) => [
            text(d.approver), text(d.decision), el("code", {}, text(d.public_key)), time(d.at_ms),
          ])),
        r.state !== "pending" ? null : [
          el("p", {}, "Approve with the approver's key (the CLI rebuilds the message from the PSBT and checks it before signing; MPC_WALLET_TOKEN: any role's token):"),
          el("pre", { class: "approve-command" },
            `mpc-wallet approve --url ${location.origin} ${r.request_id} --key approver.key`),
          el("p", {}, "or reject it (one rejection ends the request):"),
          el("pre", {}, `mpc-wallet reject --url ${location.origin} ${r.request_id} --key approver.key`),
        ],
        el("details", {}, el("summary", {}, "The signed message (hex) and the PSBT"),
          el("p", {}, "Message:"), el("pre", {}, text(r.approval_message)),
          el("p", {}, "PSBT:"), el("pre", {}, text(r.psbt))),
        r.error ? el("p", { class: "down" }, text(r.error)) : null));
    }
    return parts;
  },

  async activity() {
    const kinds = ["signing_finished", "signer_signed", "signer_refused",
      "approval_pending", "approval_decided", "approval_request_closed"];
    const entries = (await auditTail(1000)).entries.filter((e) => kinds.includes(e.kind)).slice(0, 100);
    return [
      el("h2", {}, "Recent signings and refusals"),
      el("p", { class: "muted" }, "From this node's audit log, newest first."),
      entries.length === 0 ? el("p", { class: "muted" }, "No signing yet.") :
        table(["#", "When", "Caller", "Event", "Outcome", "Txid", "Rule / error"], entries.map((e) => {
          const d = e.details || {};
          const refused = e.kind === "signer_refused" || d.ok === false;
          return [
            String(e.seq), time(e.at_ms), text(e.actor), text(e.kind),
            el("span", { class: refused ? "down" : "live" }, refused ? "refused" : d.ok === true ? "signed" : text(d.state || d.decision || "")),
            el("code", {}, text(d.txid)), text([d.rule, d.error].filter(Boolean).join(": ")),
          ];
        }), "signings"),
    ];
  },

  async audit() {
    const log = await auditTail(200);
    const entries = log.entries;
    return [
      el("h2", {}, `Audit log of node ${log.node}`),
      el("p", {}, "Head: ", el("code", { id: "audit-head" }, log.head ? `${log.head.seq}:${log.head.hash}` : "(empty)"),
        el("span", { class: "muted" }, " · keep it elsewhere; mpc-wallet audit verify --head SEQ:HASH finds a later rewrite")),
      table(["#", "When", "Actor", "Kind", "Details"], entries.map((e) => [
        String(e.seq), time(e.at_ms), text(e.actor), text(e.kind), el("code", {}, text(e.details)),
      ]), "audit-entries"),
    ];
  },

  async create() {
    const form = el("form", { id: "create-form" },
      el("label", { for: "wallet-name" }, "Name"),
      el("input", { id: "wallet-name", required: "", maxlength: "100" }),
      el("label", { for: "wallet-scheme" }, "Scheme"),
      el("select", { id: "wallet-scheme" },
        el("option", { value: "frost" }, "frost: FROST Schnorr, P2TR"),
        el("option", { value: "cggmp24" }, "cggmp24: threshold ECDSA, P2WPKH")),
      el("label", { for: "wallet-threshold" }, "Threshold (empty: the cluster's)"),
      el("input", { id: "wallet-threshold", type: "number", min: "1" }),
      el("button", { type: "submit", id: "create-button" }, "Create wallet"));
    const status = el("div", { id: "create-status" });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      createWallet(status).catch(failed);
    });
    return [
      el("h2", {}, "New wallet"),
      el("p", {}, "Runs distributed key generation on every node (admin role)."),
      form, status,
    ];
  },
};

// The last `count` entries of this node's audit log (the API pages from the oldest), newest
// first, with the log's head.
async function auditTail(count) {
  const { head } = await api("GET", "/api/v1/audit?limit=1");
  const after = Math.max(0, (head ? head.seq : 0) - count);
  const log = await api("GET", `/api/v1/audit?after=${after}&limit=${count}`);
  log.entries.reverse();
  return log;
}

async function createWallet(status) {
  show("");
  const body = { name: $("wallet-name").value, scheme: $("wallet-scheme").value };
  const threshold = $("wallet-threshold").value;
  if (threshold) body.threshold = Number(threshold);
  $("create-button").disabled = true;
  try {
    const started = await api("POST", "/api/v1/keygen", body);
    status.replaceChildren(el("p", {}, `Key generation ${started.ceremony_id} running…`));
    for (;;) {
      const c = await api("GET", `/api/v1/ceremonies/${encodeURIComponent(started.ceremony_id)}`);
      if (c.state === "succeeded") {
        const id = c.result && (c.result.wallet_id || c.result.id);
        status.replaceChildren(el("p", { id: "created", class: "live" }, `Wallet ${body.name} created `,
          el("a", { href: `#wallet/${encodeURIComponent(id)}` }, text(id)), ` in ${c.duration_ms} ms.`));
        return;
      }
      if (c.state !== "running") {
        status.replaceChildren(el("p", { class: "down" }, `Key generation failed: ${text(c.error)}`));
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } finally {
    $("create-button").disabled = false;
  }
}

// ---- navigation ---------------------------------------------------------------------------

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(`The node refused this token (${error.code}): ${error.message}`);
  } else if (error instanceof ApiError && error.status === 403) {
    show(`Not allowed with this token's role (${error.code}): ${error.message}`);
  } else {
    show(`Error: ${error.message}`);
  }
}

// Each navigation's number: a view that finishes loading after a later navigation started is
// dropped, so the page always ends on the view its address names.
let navigation = 0;

async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const mine = ++navigation;
  const [name, arg] = (location.hash.slice(1) || "health").split("/");
  const view = views[name] ? name : "health";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("current", a.dataset.view === view || (view === "wallet" && a.dataset.view === "wallets"));
  }
  const section = $("view");
  section.removeAttribute("data-loaded");
  show("");
  try {
    const content = await views[view](arg && decodeURIComponent(arg));
    if (mine !== navigation) return;
    section.replaceChildren(...[content].flat(2).filter(Boolean));
    section.dataset.loaded = view;
  } catch (error) {
    if (mine !== navigation) return;
    section.replaceChildren();
    section.dataset.loaded = `${view}:error`;
    failed(error);
  }
}

function signedIn() {
  const c = claims();
  $("whoami").textContent = `${c.sub || "?"} (${c.role || "?"})`;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("view").hidden = false;
}

function signOut(message, kind) {
  sessionStorage.removeItem(TOKEN_KEY);
  navigation++;
  $("whoami").textContent = "";
  $("nav").hidden = true;
  $("view").hidden = true;
  $("view").replaceChildren();
  $("signin").hidden = false;
  show(message || "", kind);
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  try {
    await api("GET", "/api/v1/cluster/health");
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut(`Sign-in failed: the node refused this token (${error.code}): ${error.message}`);
    } else {
      signOut(`Sign-in failed: ${error.message}`);
    }
    return;
  }
  signedIn();
  if (location.hash) await route();
  else location.hash = "#health";
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", (event) => signIn(event).catch(failed));
  $("signout").addEventListener("click", () => signOut("Signed out.", "info"));
  window.addEventListener("hashchange", () => route());
  if (sessionStorage.getItem(TOKEN_KEY)) {
    signedIn();
    route();
  } else {
    signOut();
  }
});
