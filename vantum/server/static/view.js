// DOM pieces of the page that hold no state of their own.

export const $ = (id) => document.getElementById(id);

export function setStatus(kind, text) {
  const pill = $("status");
  pill.className = `pill pill-${kind}`;
  pill.textContent = text;
}

export function scrollMessages() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

export function addMessage(role, text = "") {
  $("messages-empty")?.remove();
  const row = document.createElement("div");
  row.className = `msg msg-${role}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  const interim = document.createElement("span");
  interim.className = "interim";
  const meta = document.createElement("div");
  meta.className = "meta";
  bubble.append(body, interim);
  row.append(bubble, meta);
  $("messages").append(row);
  scrollMessages();
  return { row, body, interim, meta, text };
}

export function addTag(view, text, kind, title = "") {
  const tag = document.createElement("span");
  tag.className = `tag tag-${kind}`;
  tag.textContent = text;
  tag.title = title;
  view.meta.append(tag);
}

export function logEvent(text) {
  const log = $("log");
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  log.prepend(li);
  while (log.children.length > 200) log.lastChild.remove();
}

/** Show one error (banner + list); `entry` is {eventType, message, requestType}. */
export function renderError({ eventType, message, requestType }) {
  $("errors-empty")?.remove();
  const li = document.createElement("li");
  const code = document.createElement("code");
  code.textContent = eventType;
  const msg = document.createElement("span");
  msg.textContent = message + (requestType ? ` (on ${requestType})` : "");
  li.append(code, msg);
  $("errors").prepend(li);
  $("error-count").textContent = String($("errors").children.length);
  $("banner-title").textContent = eventType;
  $("banner-text").textContent = msg.textContent;
  $("banner").classList.remove("banner-info");
  $("banner").hidden = false;
}

export function clearErrors() {
  const none = document.createElement("li");
  none.id = "errors-empty";
  none.className = "muted";
  none.textContent = "No errors";
  $("errors").replaceChildren(none);
  $("error-count").textContent = "0";
}

export function showNotice(text) {
  $("banner-title").textContent = "Notice";
  $("banner-text").textContent = text;
  $("banner").hidden = false;
  $("banner").classList.add("banner-info");
}

export function hideBanner() {
  $("banner").hidden = true;
  $("banner").classList.remove("banner-info");
}
