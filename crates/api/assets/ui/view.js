// raftkv's live cluster view: renders each ClusterView pushed over
// server-sent events (/ui/events). Plain JavaScript and SVG, no build step.
// Every member row carries its numbers in data-* attributes, which the
// browser test reads.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function $(id) {
  return document.getElementById(id);
}

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits || 0);
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

// Where each member sits on the graph: a circle, in id order.
function positions(members) {
  const spots = new Map();
  const [cx, cy, r] = [230, 185, 130];
  members.forEach((member, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(members.length, 1);
    spots.set(member.id, { x: cx + r * Math.cos(angle), y: cy + r * Math.sin(angle) });
  });
  return spots;
}

function renderGraph(view) {
  const svg = $("graph");
  svg.replaceChildren();
  const spots = positions(view.members);
  // One line per pair; its label sums both directions.
  const pairs = new Map();
  for (const link of view.links) {
    if (!spots.has(link.from) || !spots.has(link.to)) continue;
    const key = [Math.min(link.from, link.to), Math.max(link.from, link.to)].join("-");
    const pair = pairs.get(key) || { a: Math.min(link.from, link.to), b: Math.max(link.from, link.to), msgs: 0 };
    pair.msgs += link.msgs_per_s;
    pairs.set(key, pair);
  }
  const ids = view.members.map((m) => m.id);
  for (let i = 0; i < ids.length; i++) {
    for (let j = i + 1; j < ids.length; j++) {
      const key = ids[i] + "-" + ids[j];
      if (!pairs.has(key)) pairs.set(key, { a: ids[i], b: ids[j], msgs: 0 });
    }
  }
  for (const pair of pairs.values()) {
    const [p, q] = [spots.get(pair.a), spots.get(pair.b)];
    const width = pair.msgs > 0 ? 1.5 + Math.min(8, Math.log10(1 + pair.msgs) * 2.5) : 1.5;
    svg.append(el("svg:line", {
      class: pair.msgs > 0 ? "link" : "link idle",
      x1: p.x, y1: p.y, x2: q.x, y2: q.y, "stroke-width": width,
    }));
    svg.append(el("svg:text", { class: "link-label", x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 - 6 },
      fmt(pair.msgs, 0) + "/s"));
  }
  for (const member of view.members) {
    const spot = spots.get(member.id);
    const role = member.reachable ? member.role : "unreachable";
    const group = el("svg:g", { class: "node " + role, "data-member-id": member.id });
    group.append(el("svg:circle", { cx: spot.x, cy: spot.y, r: 30 }));
    group.append(el("svg:text", { x: spot.x, y: spot.y }, member.id));
    const caption = member.reachable
      ? role + " · applied " + member.applied_index
      : "unreachable";
    group.append(el("svg:text", { class: "caption", x: spot.x, y: spot.y + 44 }, caption));
    svg.append(group);
  }
}

function renderMembers(view) {
  const rows = view.members.map((m) => {
    const row = el("tr", {
      class: m.reachable ? "reachable" : "unreachable",
      "data-member-id": m.id,
      "data-reachable": m.reachable,
      "data-role": m.role,
      "data-term": m.term,
      "data-last-index": m.last_index,
      "data-commit-index": m.commit_index,
      "data-applied-index": m.applied_index,
      "data-snapshot-index": m.snapshot_index,
    });
    const cells = [
      m.id, m.role, m.term, m.last_index, m.commit_index, m.applied_index, m.snapshot_index,
      fmt(m.matched_index), fmt(m.lag), m.requests, fmt(m.latency_p50_ms, 2), fmt(m.latency_p99_ms, 2),
      m.reachable ? "up" : "unreachable" + (m.error ? ": " + m.error : ""),
    ];
    cells.forEach((value, i) => {
      const cell = el("td", i === 1 ? { class: "role-" + m.role } : {}, value);
      row.append(cell);
    });
    return row;
  });
  $("members").replaceChildren(...rows);
}

function renderLinks(view) {
  const rows = view.links
    .filter((link) => link.msgs_per_s > 0 || link.bytes_per_s > 0)
    .map((link) => {
      const row = el("tr", { "data-from": link.from, "data-to": link.to });
      for (const value of [link.from, link.to, fmt(link.msgs_per_s, 1), fmt(link.bytes_per_s / 1024, 1)]) {
        row.append(el("td", {}, value));
      }
      return row;
    });
  $("links").replaceChildren(...rows);
}

function describe(event) {
  switch (event.kind) {
    case "leader_changed": return "member " + event.subject + " became leader";
    case "member_added": return "member " + event.subject + " added";
    case "member_removed": return "member " + event.subject + " removed";
    case "snapshot_taken": return "member " + event.member + " took a snapshot";
    case "snapshot_installed": return "member " + event.member + " installed the leader's snapshot";
    case "member_unreachable": return "member " + event.subject + " stopped answering";
    case "member_reachable": return "member " + event.subject + " is back";
    default: return event.kind;
  }
}

function renderEvents(view) {
  const items = view.events.slice().reverse().map((event) => {
    const item = el("li", { "data-kind": event.kind });
    item.append(el("span", { class: "when" }, clock(event.at_ms)));
    const where = event.kind.startsWith("member_") && event.kind.endsWith("reachable")
      ? " (as seen by member " + event.member + ")"
      : " (term " + event.term + ", index " + event.index + ")";
    item.append(document.createTextNode(describe(event) + where));
    return item;
  });
  $("events").replaceChildren(...items);
}

function render(view) {
  const root = $("cluster");
  root.dataset.leaderId = view.leader_id === null ? "" : String(view.leader_id);
  root.dataset.generatedAtMs = String(view.generated_at_ms);
  const leader = view.members.find((m) => m.id === view.leader_id);
  $("served-by").textContent = view.served_by;
  $("leader").textContent = view.leader_id === null ? "none" : view.leader_id;
  $("term").textContent = leader ? leader.term : "?";
  $("updated").textContent = "updated " + clock(view.generated_at_ms);
  renderGraph(view);
  renderMembers(view);
  renderLinks(view);
  renderEvents(view);
}

function setConnection(state) {
  const badge = $("connection");
  badge.className = "connection " + state;
  badge.textContent = state;
}

// EventSource reconnects by itself when the serving member comes back.
function connect() {
  const source = new EventSource("/ui/events");
  source.onopen = () => setConnection("live");
  source.onerror = () => setConnection("lost");
  source.onmessage = (message) => {
    setConnection("live");
    render(JSON.parse(message.data));
  };
}

connect();
