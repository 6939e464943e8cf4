// The console's progressive enhancement: every page works without it. With it, times count
// down, the board refreshes itself, and an incident page follows the incident live.
"use strict";

(function () {
  const REFRESH_HEADER = "X-Console-Refresh";

  // --- durations and countdowns ------------------------------------------------------------
  function span(seconds) {
    let left = Math.floor(Math.abs(seconds));
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
      if (left >= size || (unit === "s" && parts.length === 0)) {
        parts.push(Math.floor(left / size) + unit);
        left %= size;
      }
    }
    return parts.slice(0, 2).join(" ");
  }

  function clock(date) {
    return date.toISOString().slice(11, 16) + " UTC";
  }

  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-countdown]")) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (Number.isNaN(at)) continue;
      if (!el.dataset.absolute) el.dataset.absolute = el.textContent;
      const left = (at - now) / 1000;
      el.textContent = (left >= 0 ? "in " + span(left) : span(left) + " ago") + " · " + clock(new Date(at));
      el.title = el.dataset.absolute;
      el.classList.toggle("soon", left >= 0 && left < 3600);
      el.classList.toggle("past", left < 0);
    }
  }

  // --- refreshing parts of a page in place ---------------------------------------------------
  // A region the user is filling in is left alone (and refreshed next time), as is one whose
  // form was refused and given back what had been typed (data-typed).
  function busy(region) {
    if (region.querySelector("[data-typed]")) return true;
    const active = document.activeElement;
    if (active && active !== document.body && region.contains(active) && active.matches("input, textarea, select")) {
      return true;
    }
    for (const field of region.querySelectorAll("input, textarea")) {
      if (field.type === "hidden") continue;
      if (field.type === "checkbox" ? field.checked !== field.defaultChecked : field.value !== field.defaultValue) {
        return true;
      }
    }
    return false;
  }

  let refreshing = false;
  let again = false; // news arrived during a refresh: refresh once more after it
  async function refreshRegions() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    again = false;
    try {
      const response = await fetch(window.location.href, {
        headers: { [REFRESH_HEADER]: "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!response.ok || new URL(response.url).pathname !== window.location.pathname) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of document.querySelectorAll("[data-region][id]")) {
        const replacement = fresh.getElementById(region.id);
        if (replacement && !busy(region)) region.replaceWith(document.importNode(replacement, true));
      }
      tick();
    } catch (error) {
      // Offline for a moment: the next refresh tries again.
    } finally {
      refreshing = false;
      if (again) refreshSoon();
    }
  }

  let pending = null;
  function refreshSoon() {
    if (pending) clearTimeout(pending);
    pending = setTimeout(() => { pending = null; refreshRegions(); }, 250);
  }

  // --- the board: fetch itself every few seconds ---------------------------------------------
  function followBoard() {
    const board = document.querySelector("[data-auto-refresh]");
    if (!board) return;
    const seconds = Number(board.dataset.autoRefresh) || 10;
    setInterval(() => { if (!document.hidden) refreshRegions(); }, seconds * 1000);
  }

  // --- an incident: its live timeline (server-sent events) -----------------------------------
  function appendEntry(list, entry) {
    if (list.querySelector('[data-seq="' + entry.seq + '"]')) return;
    const item = document.createElement("li");
    item.dataset.seq = String(entry.seq);
    item.className = "fresh kind-" + String(entry.kind).replace(/\./g, "-");
    const time = document.createElement("time");
    time.setAttribute("datetime", entry.at);
    time.textContent = "+" + span(entry.offset_seconds);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = entry.text;
    item.append(time, " ", text);
    list.append(item);
  }

  function followIncident() {
    const list = document.getElementById("timeline");
    if (!list || !list.dataset.events || !window.EventSource || list.dataset.closed === "yes") return;
    const badge = document.querySelector("[data-live-state]");
    const source = new EventSource(list.dataset.events);
    source.addEventListener("open", () => { if (badge) badge.hidden = false; });
    source.addEventListener("timeline", (event) => appendEntry(list, JSON.parse(event.data)));
    source.addEventListener("status", refreshSoon);
    source.addEventListener("end", () => {
      source.close();
      list.dataset.closed = "yes";
      if (badge) badge.hidden = true;
      refreshSoon();
    });
    source.addEventListener("error", () => {
      if (badge && source.readyState === EventSource.CLOSED) badge.hidden = true;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
    followBoard();
    followIncident();
  });
})();
