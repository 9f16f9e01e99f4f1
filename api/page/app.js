// The orstream record page: rooms, cases and a case's timeline, growing live.
// Everything comes from the API with the token the user gives (kept in this tab's session
// storage); the live feed (/v1/live, server-sent events) is read with fetch as a stream.
'use strict';

const TOKEN_KEY = 'orstream-token';
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  room: null,
  caseId: null,
  summary: null,
  events: new Map(),
  feed: null,
  refreshing: null,
  listing: null,
  picture: null,
};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function utc(ns) {
  if (ns === null || ns === undefined) return '';
  return new Date(Number(ns) / 1e6).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
}

function clock(ns) {
  const total = Math.max(0, Math.round(Number(ns) / 1e9));
  const h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
  const mm = String(m).padStart(2, '0'), ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
}

function showError(message) { $('error').textContent = message || ''; }

class Unauthorized extends Error {}

async function call(path, raw) {
  const response = await fetch(path, {
    headers: { Authorization: 'Bearer ' + state.token },
    cache: 'no-store',
  });
  if (response.status === 401) throw new Unauthorized('That token is not accepted.');
  if (!response.ok) {
    let why = response.statusText;
    try { why = (await response.json()).error; } catch (_) { /* not JSON */ }
    const error = new Error(why);
    error.status = response.status;
    throw error;
  }
  return raw ? response : response.json();
}

// Runs an API task; a refused token signs out, other errors are shown.
async function guarded(task) {
  try {
    await task();
    showError('');
  } catch (error) {
    if (error instanceof Unauthorized) signOut(error.message);
    else showError(error.message);
  }
}

function signOut(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.feed) state.feed.abort();
  state.feed = null;
  $('app').hidden = true;
  $('who').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
}

async function signIn(token) {
  state.token = token;
  try {
    await call('/v1/rooms');
  } catch (error) {
    signOut(error instanceof Unauthorized ? error.message : 'The API does not answer: ' + error.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('app').hidden = false;
  $('who').hidden = false;
  $('login-error').textContent = '';
  follow();
  await guarded(loadLists);
  const wanted = new URLSearchParams(location.hash.slice(1)).get('case');
  if (wanted) await openCase(wanted);
}

async function loadLists() {
  const rooms = (await call('/v1/rooms')).rooms;
  const list = $('rooms');
  list.replaceChildren(...rooms.map((room) => {
    const item = el('li', { 'data-room': room.room_id, class: room.room_id === state.room ? 'chosen' : '' },
      room.room_id,
      room.open_case ? el('span', { class: 'badge live' }, 'case running') : '',
      el('small', {}, `${room.cases} case${room.cases === 1 ? '' : 's'}`));
    item.addEventListener('click', () => { state.room = room.room_id; guarded(loadLists); });
    return item;
  }));
  $('all-rooms').hidden = state.room === null;
  const query = state.room ? `?limit=100&room=${encodeURIComponent(state.room)}` : '?limit=100';
  const cases = (await call('/v1/cases' + query)).cases;
  $('cases').replaceChildren(...cases.map((c) => {
    const running = c.room_id !== '' && c.closed_ns === null;
    const item = el('li', { 'data-case': c.case_id, class: c.case_id === state.caseId ? 'chosen' : '' },
      c.case_id,
      running ? el('span', { class: 'badge live' }, 'live')
        : el('span', { class: 'badge ' + (c.complete ? 'complete' : 'incomplete') },
          c.complete ? 'complete' : 'incomplete'),
      el('small', {}, `${c.room_id || 'no room'} · ${utc(c.opened_ns ?? c.started_ns)} · ${c.events} events`));
    item.addEventListener('click', () => openCase(c.case_id));
    return item;
  }));
}

// Lists again, at most every half second however many notices arrive.
function relist() {
  if (state.listing) return;
  state.listing = setTimeout(() => { state.listing = null; guarded(loadLists); }, 500);
}

async function openCase(caseId) {
  state.caseId = caseId;
  state.events = new Map();
  history.replaceState(null, '', '#case=' + encodeURIComponent(caseId));
  for (const item of document.querySelectorAll('#cases li')) {
    item.classList.toggle('chosen', item.dataset.case === caseId);
  }
  $('pick').hidden = true;
  $('case').hidden = false;
  $('case-title').textContent = 'Case ' + caseId;
  await refreshCase();
}

async function refreshCase() {
  const caseId = state.caseId;
  if (!caseId) return;
  await guarded(async () => {
    const base = '/v1/cases/' + encodeURIComponent(caseId);
    let summary, timeline, accounting, picture;
    try {
      [summary, timeline, accounting, picture] = await Promise.all([
        call(base), call(base + '/timeline').catch((e) => (e.status === 404 ? null : Promise.reject(e))),
        call(base + '/accounting'), call(base + '/timeline.svg', true).then((r) => r.blob()),
      ]);
    } catch (error) {
      if (error.status === 404) {
        $('case').hidden = true;
        $('pick').hidden = false;
        throw new Error('No such case, or not one of your rooms: ' + caseId);
      }
      throw error;
    }
    if (caseId !== state.caseId) return;
    state.summary = summary;
    const running = summary.room_id !== '' && summary.closed_ns === null;
    $('case-state').replaceChildren(
      `${summary.room_id || 'no room'} · started ${utc(summary.opened_ns ?? summary.started_ns)}`,
      summary.closed_ns ? ` · ended ${utc(summary.closed_ns)}` : '',
      running ? el('span', { class: 'badge live', id: 'case-live' }, 'live') : '');
    const missing = accounting.streams.filter((s) => !s.complete).map((s) => s.stream_id);
    const incomplete = $('incomplete');
    incomplete.hidden = summary.complete;
    incomplete.classList.toggle('running', running);
    incomplete.textContent = summary.complete ? '' : (running
      ? 'The case is still running: its record is not complete yet.'
      : 'Incomplete record: not every published frame has a stored result'
        + (missing.length ? ` (${missing.join(', ')})` : '') + '.');
    if (state.picture) URL.revokeObjectURL(state.picture);
    state.picture = URL.createObjectURL(picture);
    $('picture').src = state.picture;
    $('accounting').tBodies[0].replaceChildren(...accounting.streams.map((s) => el('tr',
      { 'data-stream': s.stream_id, class: s.complete ? '' : 'gap' },
      el('td', {}, s.stream_id), el('td', { class: 'num' }, s.published ?? '—'),
      el('td', { class: 'num' }, s.results), el('td', { class: 'num' }, s.ok),
      el('td', { class: 'num' }, s.skipped), el('td', { class: 'num' }, s.errors),
      el('td', { class: 'num' }, s.redacted ?? 0),
      el('td', { class: 'num' }, s.dropped), el('td', {}, s.complete ? 'yes' : 'no'))));
    if (timeline) {
      for (const e of timeline.events) {
        remember({ kind: 'presence', event_id: e.event_id, label: e.label, stream_id: e.stream_id,
          start_offset_ns: e.start_offset_ns, end_offset_ns: e.end_offset_ns, open: e.open });
      }
      for (const g of timeline.gaps) {
        const outside = g.kind === 'out_of_body';
        remember({ kind: outside ? 'out_of_body' : 'gap', event_id: g.event_id,
          label: (outside ? 'camera out of body' : g.kind) + ': ' + g.reason,
          stream_id: g.stream_id, start_offset_ns: g.start_offset_ns, end_offset_ns: g.end_offset_ns });
      }
      for (const t of timeline.tracks) {
        remember({ kind: 'track', event_id: t.event_id, label: `${t.label} #${t.track_id}`,
          stream_id: t.stream_id, start_offset_ns: t.start_offset_ns, end_offset_ns: t.end_offset_ns,
          open: t.open });
      }
    }
    drawEvents();
  });
}

function remember(event, fresh) {
  const known = state.events.get(event.event_id);
  state.events.set(event.event_id, { ...known, ...event, fresh: fresh || (known && known.fresh) });
}

function drawEvents() {
  const rows = [...state.events.values()]
    .sort((a, b) => a.start_offset_ns - b.start_offset_ns || a.event_id.localeCompare(b.event_id));
  $('event-count').textContent = `(${rows.length})`;
  $('events').tBodies[0].replaceChildren(...rows.map((e) => el('tr',
    { 'data-event-id': e.event_id, 'data-kind': e.kind,
      class: (e.kind === 'gap' ? 'gap' : e.kind === 'out_of_body' ? 'outside' : '')
        + (e.fresh ? ' fresh' : '') },
    el('td', {}, e.kind + (e.open ? ' (open)' : '')), el('td', {}, e.label),
    el('td', {}, e.stream_id), el('td', { class: 'num' }, clock(e.start_offset_ns)),
    el('td', { class: 'num' }, clock(e.end_offset_ns)),
    el('td', { class: 'num' }, clock(e.end_offset_ns - e.start_offset_ns)))));
}

// Fetches the case again soon, at most every 300 ms however many notices arrive.
function refreshSoon() {
  if (state.refreshing) return;
  state.refreshing = setTimeout(() => { state.refreshing = null; refreshCase(); }, 300);
}

function onNotice(name, data) {
  if (name === 'lagged') { relist(); refreshSoon(); return; }
  if (name === 'case') relist();
  if (data.case_id !== state.caseId) { if (name === 'record') relist(); return; }
  if (name === 'record') {
    const label = data.kind === 'gap' ? 'gap: ' + data.gap_reason
      : data.kind === 'out_of_body' ? 'camera out of body: ' + data.gap_reason
      : data.kind === 'track' ? `${data.label} #${data.track_id}` : data.label;
    remember({ kind: data.kind, event_id: data.event_id, label, stream_id: data.stream_id,
      start_offset_ns: data.start_offset_ns, end_offset_ns: data.end_offset_ns, open: false }, true);
    drawEvents();
  }
  refreshSoon();
}

function setLive(on) {
  const mark = $('live-state');
  mark.textContent = on ? 'live: on' : 'live: off';
  mark.className = on ? 'on' : 'off';
}

// Follows /v1/live for as long as the user is signed in, reconnecting after a break.
async function follow() {
  if (state.feed) state.feed.abort();
  const feed = new AbortController();
  state.feed = feed;
  while (!feed.signal.aborted) {
    try {
      const response = await fetch('/v1/live', {
        headers: { Authorization: 'Bearer ' + state.token }, signal: feed.signal, cache: 'no-store',
      });
      if (response.status === 401) { signOut('That token is not accepted.'); return; }
      if (!response.ok) throw new Error('live feed: ' + response.status);
      setLive(true);
      // Anything missed while away.
      relist();
      refreshSoon();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trimStart();
          }
          if (!data) continue;
          try { onNotice(name, JSON.parse(data)); } catch (_) { /* a broken notice is skipped */ }
        }
      }
    } catch (_) {
      if (feed.signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// A running case grows between notices too (its open intervals): fetch it again now and then.
setInterval(() => {
  const s = state.summary;
  if (state.token && s && s.case_id === state.caseId && s.room_id !== '' && s.closed_ns === null) {
    refreshCase();
  }
}, 5000);

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    if (token) signIn(token);
  });
  $('logout').addEventListener('click', () => signOut(''));
  $('all-rooms').addEventListener('click', () => { state.room = null; guarded(loadLists); });
  // A link or a typed address to another case (#case=ID) opens it.
  window.addEventListener('hashchange', () => {
    const wanted = new URLSearchParams(location.hash.slice(1)).get('case');
    if (state.token && wanted && wanted !== state.caseId) openCase(wanted);
  });
  if (state.token) signIn(state.token);
  else signOut('');
});
