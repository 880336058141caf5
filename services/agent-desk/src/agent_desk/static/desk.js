// The live timeline and the reply box of the customer page.
"use strict";

const STATUS_RANK = { sending: 0, sent: 1, delivered: 2, read: 3, failed: 4 };
const RELOAD_AFTER_MS = 5000; // a stream the browser gave up on: reload (an expired session signs in)
const EXPIRED = "Your sign-in has expired. Copy your message, then reload the page to sign in again.";

function fromHtml(html) {
  const holder = document.createElement("template");
  holder.innerHTML = html.trim();
  return holder.content.firstElementChild;
}

function place(timeline, item) {
  // Newest first, by when it happened: a late entry lands where it belongs. Compared as
  // instants, not as text: offsets and fractions of a second differ between sources.
  const at = Date.parse(item.dataset.occurred);
  for (const other of timeline.children) {
    if (Date.parse(other.dataset.occurred) < at) {
      timeline.insertBefore(item, other);
      return;
    }
  }
  timeline.appendChild(item);
}

function setStatus(item, status, error) {
  const chip = item.querySelector("[data-status]");
  const current = chip.dataset.value || "";
  if ((STATUS_RANK[status] ?? 0) < (STATUS_RANK[current] ?? -1)) return;
  chip.dataset.value = status;
  chip.dataset.error = error || "";
  chip.className = "status s-" + status;
  chip.textContent = error ? status + ": " + error : status;
  item.classList.remove("waiting");
  item.querySelector(".waiting-note")?.remove();
}

function markWaiting(timeline) {
  // A reply its channel has not recorded for a while (`data-reply-wait` seconds): its service
  // may be down, behind or still trying the provider (one Kafka says is not running is shown
  // waiting from the start).
  const wait = Number(timeline.dataset.replyWait || 0) * 1000;
  if (!wait) return;
  for (const item of timeline.querySelectorAll(".entry.pending[data-queued]:not(.waiting)")) {
    const chip = item.querySelector("[data-status]");
    if (chip.dataset.value !== "sending") continue;
    if (Date.now() - Date.parse(item.dataset.queued) < wait) continue;
    item.classList.add("waiting");
    chip.className = "status s-waiting";
    chip.textContent = "not confirmed yet";
    const note = item.querySelector(".waiting-note");
    if (note) note.hidden = false;
  }
}

function onServices(timeline, states) {
  // A reply queued on a channel whose service stopped waits, and says why; once one runs again
  // it is sending (and "not confirmed yet" after the usual wait). The reply box's warning
  // follows with the panels.
  for (const item of timeline.querySelectorAll(".entry.pending[data-queued]")) {
    const state = states[item.dataset.channel];
    const chip = item.querySelector("[data-status]");
    if (!state || chip.dataset.value !== "sending") continue;
    const note = item.querySelector(".waiting-note");
    if (state.stopped) {
      item.classList.add("waiting");
      item.dataset.stopped = "yes";
      chip.className = "status s-waiting";
      chip.textContent = state.status;
      if (note) { note.textContent = state.note; note.hidden = false; }
    } else if (item.dataset.stopped) {
      delete item.dataset.stopped;
      item.classList.remove("waiting");
      chip.className = "status s-sending";
      chip.textContent = "sending";
      if (note) { note.textContent = state.note; note.hidden = true; }
    }
  }
  markWaiting(timeline);
  refreshPanels();
}

function onEntry(timeline, data) {
  document.getElementById("empty")?.remove();
  const existing = document.getElementById("e-" + data.id);
  if (existing && !existing.classList.contains("pending")) return; // shown already
  // A status folds into its message, but not the provider's later word on a reply reported
  // "perhaps not sent" (`after_report`): the reply's row shows that report; this says more.
  if (data.type === "message_status" && data.provider_id && !data.after_report) {
    const message = timeline.querySelector(`[data-provider-id="${CSS.escape(data.provider_id)}"]`);
    if (message && message.dataset.type !== "message_status") {
      setStatus(message, data.status, data.error);
      window.hiloLive.received += 1;
      return;
    }
  }
  const item = fromHtml(data.html);
  item.classList.add("arrived");
  if (existing) {
    const chip = existing.querySelector("[data-status]");
    existing.replaceWith(item);
    if (chip.dataset.value === "failed") setStatus(item, "failed", chip.dataset.error);
  } else {
    place(timeline, item);
  }
  window.hiloLive.received += 1;
  refreshPanels();
}

async function readPage(url) {
  // The page at `url` as the desk serves it now, parsed ({content}), or why not ({failed}):
  // "signed-out" for the sign-in form after a redirect, "unavailable" for an error page or no
  // answer.
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "text/html" } });
  } catch {
    return { failed: "unavailable" };
  }
  if (response.redirected) return { failed: "signed-out" };
  if (!response.ok) return { failed: "unavailable" };
  const holder = document.createElement("template");
  holder.innerHTML = await response.text();
  return { content: holder.content };
}

async function freshPage(url) {
  // The page at `url` as the desk serves it now; null for anything else, which keeps what is
  // shown.
  return (await readPage(url)).content ?? null;
}

function controlKey(element) {
  // What names a control across two renderings of a page: its id, or what it is and does.
  if (element.id) return element.id;
  const form = element.closest("form")?.getAttribute("action") ?? "";
  return [element.tagName, element.getAttribute("href"), element.name, element.value, form,
    element.textContent.trim()].join("|");
}

function swap(current, fresh) {
  // `fresh` in place of `current`, unless nothing changed; the control the agent is on keeps
  // the focus: replaced every 15 s, a keyboard or screen-reader user was sent back to the top
  // of the page from "Take it" or a row of the queue.
  if (current.isEqualNode(fresh)) return;
  const active = document.activeElement;
  const focused = active && current.contains(active) ? controlKey(active) : null;
  current.replaceWith(fresh);
  if (focused === null) return;
  const controls = fresh.querySelectorAll("a, button, input, select, textarea, summary");
  [...controls].find((control) => controlKey(control) === focused)?.focus();
}

let refreshTimer = null;

function refreshPanels() {
  // A new entry may change the conversation, cart, orders or what a reply may do: re-read them.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    // The panels follow whether or not the customer can be replied to (no reply form).
    const current = document.getElementById("panels");
    if (!current) return;
    // Anything but the panels themselves keeps the panels shown: the next entry, or the timer,
    // tries again.
    const asked = ++panelsAsked;
    const page = await freshPage(`/customers/${current.dataset.customer}/panels`);
    const fresh = page?.getElementById("panels");
    if (!fresh || asked !== panelsAsked) return; // a later read answers instead
    const shown = document.getElementById("panels");
    if (shown) swap(shown, fresh);
    const notes = page.getElementById("notes-list");
    const notesShown = document.getElementById("notes-list");
    if (notes && notesShown) swap(notesShown, notes);
    const select = document.getElementById("reply-channel");
    if (!select) return;
    // The same channels, warnings and default as before: the box is left alone (an open list
    // stays open). The default moves when the customer writes on another channel (WhatsApp,
    // then SMS): the box follows, as Send would, unless the agent picked one.
    const same = (name) => fresh.dataset[name] === current.dataset[name];
    if (same("options") && same("warnings") && same("default")) return;
    replyOptions(select, fresh);
    select.dispatchEvent(new Event("change"));
  }, 400);
}

let panelsAsked = 0;

function drafting() {
  // A reply being written: its text, its subject (an email's), or a template's name or
  // parameters; or a note.
  if (document.getElementById("note-text")?.value.trim()) return true;
  const form = document.getElementById("reply-form");
  if (!form) return false;
  const fields = ["text", "template_name", "template_parameters"];
  if (form.elements.channel?.value === "email") fields.push("subject");
  return fields.some((name) => form.elements[name]?.value.trim());
}

function replyOptions(select, panels) {
  // The channels and addresses a reply may take now (the customer wrote from another number, a
  // merge brought a channel): the box says where Send goes, as the desk decides it then.
  const warnings = JSON.parse(panels.dataset.warnings || "{}");
  const options = JSON.parse(panels.dataset.options || "[]");
  if (!options.length) return;
  const picked = select.dataset.picked ? select.value : null;
  select.replaceChildren(...options.map(([channel, label]) => {
    const option = document.createElement("option");
    option.value = channel;
    option.textContent = label;
    option.dataset.warning = warnings[channel] || "";
    return option;
  }));
  // Until the agent picks one (and while it is still offered), the reply goes where the
  // customer last wrote.
  const offered = (channel) => options.some(([value]) => value === channel);
  if (picked && offered(picked)) {
    select.value = picked;
    return;
  }
  delete select.dataset.picked;
  const fallback = panels.dataset.default;
  select.value = fallback && offered(fallback) ? fallback : options[0][0];
}

function follow(timeline) {
  window.hiloLive = { connected: false, received: 0, position: timeline.dataset.after };
  const state = document.getElementById("live-state");
  // The ids the page was rendered with: a merge or split while reconnecting is told too.
  const ids = `&ids=${encodeURIComponent(timeline.dataset.ids)}`;
  const url = `${timeline.dataset.live}?after=${encodeURIComponent(timeline.dataset.after)}${timeline.dataset.filters}${ids}`;
  const source = new EventSource(url);
  source.onopen = () => {
    window.hiloLive.connected = true;
    state.textContent = "live";
    state.classList.remove("off");
  };
  let reloading = false;
  source.onerror = () => {
    window.hiloLive.connected = false;
    state.textContent = "reconnecting…";
    state.classList.add("off");
    // CLOSED: the browser will not reconnect by itself (the desk answered 401, an error page
    // or a sign-in form). Reloading retries, and sends an expired session to sign in.
    if (source.readyState === EventSource.CLOSED && !reloading) {
      // A reply being written is never thrown away by a reload: the agent reloads once it is
      // sent (or copied).
      if (drafting()) {
        state.textContent = "not live: reload once your reply is sent";
        return;
      }
      reloading = true;
      setTimeout(() => window.location.reload(), RELOAD_AFTER_MS);
    }
  };
  source.addEventListener("entry", (event) => {
    window.hiloLive.position = event.lastEventId;
    onEntry(timeline, JSON.parse(event.data));
  });
  // Whether each reply channel's service runs, when the stream opens and whenever it changes.
  source.addEventListener("services", (event) => onServices(timeline, JSON.parse(event.data)));
  // Nothing for this page up to here: the browser resumes from this id after a blip.
  source.addEventListener("tick", (event) => { window.hiloLive.position = event.lastEventId; });
  // The desk restarted, or another instance answered: what the page holds cannot be resumed.
  // A reply being written is kept, as on any other reload.
  source.addEventListener("resync", () => {
    if (drafting()) {
      stop("not live: reload once your reply is sent");
      return;
    }
    window.location.reload();
  });
  const stop = (why) => {
    source.close();
    window.hiloLive.connected = false;
    state.textContent = why;
    state.classList.add("off");
  };
  // The session ended: no reload, which would lose a reply being typed (Send says what to do).
  source.addEventListener("signed-out", () => stop("signed out: reload to sign in again"));
  // Merged into another customer, or a merge undone: what is shown is no longer one person's
  // journey. The stream stops (no one else's entries arrive); reloading shows it as it is now.
  source.addEventListener("identity-changed", () => {
    stop("this customer was merged or split: reload to see their journey as it is now");
  });
}

function pendingRow(answer, text, channelLabel) {
  const item = fromHtml(`<li class="entry type-message outbound pending" data-type="message">
    <div class="meta"><time></time><span class="badge"></span><span class="kind">Message</span>
    <span class="status s-sending" data-status data-value="sending">sending</span></div>
    <div class="summary">Outbound reply</div><div class="text"></div></li>`);
  item.id = "e-" + answer.entry_id;
  item.dataset.providerId = answer.failure_id;
  item.dataset.occurred = new Date().toISOString();
  item.dataset.queued = item.dataset.occurred;
  const note = fromHtml(`<div class="waiting-note" hidden></div>`);
  note.textContent = answer.waiting_note;
  item.appendChild(note);
  item.querySelector("time").textContent = "just now";
  if (answer.service_running === false) {
    // No instance of the channel's service is running (Kafka says): it waits, and says why now.
    item.classList.add("waiting");
    item.dataset.stopped = "yes";
    const chip = item.querySelector("[data-status]");
    chip.className = "status s-waiting";
    chip.textContent = answer.waiting_status;
    note.hidden = false;
  }
  const badge = item.querySelector(".badge");
  badge.textContent = channelLabel;
  badge.classList.add("ch-" + answer.channel);
  item.querySelector(".text").textContent = text;
  return item;
}

function replies(form) {
  const select = document.getElementById("reply-channel");
  const warning = document.getElementById("reply-warning");
  const result = document.getElementById("reply-result");
  const showWarning = () => {
    const text = select.selectedOptions[0]?.dataset.warning || "";
    warning.textContent = text;
    warning.hidden = !text;
    if (text.includes("template")) document.getElementById("template-box").open = true;
  };
  select.addEventListener("change", showWarning);
  // Only an email has a subject: left empty, it answers `Re:` the customer's last email.
  const subjectBox = document.getElementById("subject-box");
  const showSubject = () => { subjectBox.hidden = select.value !== "email"; };
  select.addEventListener("change", showSubject);
  showSubject();
  // Held on its channel by a send (not picked by the agent): followed again once it is queued.
  let heldBySend = false;
  select.addEventListener("input", () => { select.dataset.picked = "yes"; heldBySend = false; });
  showWarning();
  const button = form.querySelector('button[type="submit"]');
  button.disabled = false; // rendered disabled: before this runs, Send would reload the page
  // One id per reply, kept while the same reply is retried: if an attempt's answer was lost
  // after the desk queued it, the retry is the same command and the channel sends it once. A
  // reply that differs in anything (text, channel, template) gets another id.
  let attempt = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return; // one reply per press: a double click must not send twice
    const data = new FormData(form);
    const body = {
      channel: data.get("channel"),
      text: data.get("text") || null,
      template_name: data.get("template_name") || null,
      template_language: data.get("template_language") || "en_US",
      // One per line: a parameter may hold a comma ("59,90 €", "Calle Mayor, 5").
      template_parameters: (data.get("template_parameters") || "").split("\n").map((p) => p.trim()).filter(Boolean),
      subject: data.get("channel") === "email" ? data.get("subject") || null : null,
      purpose: data.get("marketing") ? "marketing" : "service",
    };
    const content = JSON.stringify(body);
    if (attempt?.content !== content) attempt = { content, id: newId() };
    // Sent on this channel: a refresh meanwhile must not move the box (a retry of the same reply
    // is the same command only if nothing in it changed), nor the label said below. Once it
    // is queued, the box follows the customer again, unless the agent had picked it.
    if (!select.dataset.picked) {
      select.dataset.picked = "yes";
      heldBySend = true;
    }
    const channelLabel = select.selectedOptions[0].textContent.split(" · ")[0];
    body.command_id = attempt.id;
    result.textContent = "Sending…";
    result.className = "";
    button.disabled = true;
    let outcome;
    try {
      outcome = await postReply(form.dataset.customer, body);
    } finally {
      button.disabled = false;
    }
    if (outcome.error) {
      // What the agent wrote stays in the box, to send again.
      result.textContent = outcome.error;
      result.className = "error";
      return;
    }
    attempt = null;
    if (heldBySend) {
      delete select.dataset.picked;
      heldBySend = false;
    }
    const answer = outcome.answer;
    result.textContent = `Queued on ${channelLabel}.`;
    const timeline = document.getElementById("timeline");
    if (!document.getElementById("e-" + answer.entry_id)) {
      place(timeline, pendingRow(answer, body.text || `[template ${body.template_name}]`, channelLabel));
    }
    // The whole reply is sent: a template left filled in would be sent again, not the next text.
    document.getElementById("reply-text").value = "";
    for (const name of ["subject", "template_name", "template_parameters"]) form.elements[name].value = "";
    form.elements.marketing.checked = false;
    document.getElementById("template-box").open = false;
  });
}

function newId() {
  // A random (version 4) UUID; crypto.randomUUID needs HTTPS, which a desk on a LAN may lack.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function postReply(customer, body) {
  // { answer } when the desk queued the reply, { error } with what to tell the agent otherwise.
  let response;
  try {
    response = await fetch(`/customers/${customer}/replies`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
      },
      body: JSON.stringify(body),
    });
  } catch {
    return { error: "The desk did not answer. Try again." };
  }
  if (response.redirected || response.status === 401) return { error: EXPIRED };
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    return { error: answer?.error || answer?.detail || `Refused (${response.status}).` };
  }
  if (typeof answer?.entry_id !== "string") {
    return { error: "The desk gave an answer it should not have: the reply may not be queued. Reload the page before trying again." };
  }
  return { answer };
}

async function sendForm(form, submitter) {
  // Post a form of the customer page without leaving it (a reply being written stays).
  // `answered`: the desk answered (else the request never reached it, or the session ended);
  // `said`: what to tell the agent, null once the desk did it.
  const body = new FormData(form); // before disabling: a disabled control sends nothing
  if (submitter?.name) body.set(submitter.name, submitter.value); // which button: take, delete…
  const buttons = form.querySelectorAll("button");
  form.dataset.busy = "yes";
  for (const button of buttons) button.disabled = true;
  let response;
  try {
    response = await fetch(form.getAttribute("action"), { // form.action is the button named so
      method: "POST",
      body,
      headers: { "X-Requested-With": "fetch", Accept: "application/json" },
    });
  } catch {
    return { answered: false, said: "The desk did not answer. Try again." };
  } finally {
    delete form.dataset.busy;
    for (const button of buttons) button.disabled = false;
  }
  if (response.redirected || response.status === 401) return { answered: false, said: EXPIRED };
  if (response.ok) return { answered: true, said: null };
  const answer = await response.json().catch(() => null);
  const said = answer?.message || answer?.error || (typeof answer?.detail === "string" && answer.detail);
  return { answered: true, said: said || `Refused (${response.status}).` };
}

async function handle(event) {
  // Take, let go of or mark done the conversation; the panels then show who has it now.
  // Without this script the form posts and the page comes back.
  const form = event.target.closest("form.handling");
  if (!form) return;
  event.preventDefault();
  const result = document.getElementById("handling-result");
  result.textContent = "";
  if (form.dataset.busy) return; // a double click is one request
  const { answered, said } = await sendForm(form, event.submitter);
  if (said) result.textContent = said;
  if (answered) refreshPanels();
}

document.addEventListener("submit", handle);

async function note(event) {
  // Add a note, or delete one's own; the notes then come with the panels.
  const form = event.target.closest("form.note-form");
  if (!form) return;
  event.preventDefault();
  const result = document.getElementById("note-result");
  if (result) result.textContent = "";
  if (form.dataset.busy) return;
  const { said } = await sendForm(form, event.submitter);
  if (said) {
    if (result) result.textContent = said;
    return;
  }
  if (form.id === "note-form") form.elements.text.value = "";
  refreshPanels();
}

document.addEventListener("submit", note);

const INBOX_REFRESH_MS = 15000;

function refreshPanelsNowAndThen(panels) {
  // Between entries too: a colleague takes the conversation or marks it done, the wait grows.
  setInterval(() => {
    if (!document.hidden) refreshPanels(); // the notes come with them
  }, Number(panels.dataset.refresh || INBOX_REFRESH_MS));
}

function refreshInbox(inbox) {
  // The queue moves without the agent: new customers wait, colleagues take conversations, the
  // waits grow. Only the list is replaced (the search box above keeps what is typed); an error
  // page, a sign-in page or no answer keeps the list shown, saying since when it is not
  // updated (a queue left open on a supervisor's screen went stale without a word).
  let readAt = new Date();
  setInterval(async () => {
    if (document.hidden) return;
    const read = await readPage(location.href);
    const fresh = read.content?.getElementById("inbox");
    const current = document.getElementById("inbox");
    const state = document.getElementById("inbox-state");
    if (!fresh || !current) {
      if (!state) return;
      const since = readAt.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      state.textContent = read.failed === "signed-out"
        ? `Not updated since ${since}: your sign-in ended. Reload to sign in again.`
        : `Not updated since ${since}: the desk is not answering. It tries again by itself.`;
      state.hidden = false;
      return;
    }
    readAt = new Date();
    if (state) state.hidden = true;
    swap(current, fresh);
  }, Number(inbox.dataset.refresh || INBOX_REFRESH_MS));
}

document.addEventListener("DOMContentLoaded", () => {
  const timeline = document.getElementById("timeline");
  if (timeline?.dataset.live) follow(timeline);
  if (timeline) {
    markWaiting(timeline);
    setInterval(() => markWaiting(timeline), 5000);
  }
  const form = document.getElementById("reply-form");
  if (form) replies(form);
  const inbox = document.getElementById("inbox");
  if (inbox) refreshInbox(inbox);
  const panels = document.getElementById("panels");
  if (panels) refreshPanelsNowAndThen(panels);
});
