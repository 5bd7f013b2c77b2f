// The demo meeting page: lobby (name, camera preview) -> room (tiles, controls, chat,
// transcript) -> notices (room full, link expired, left, ...). Built on connvo.js.
//
// Dev mode only: people sign in with a name (POST /api/dev/login). The person who starts a
// meeting is its host and gets an invite link (`/?invite=...`); whoever opens it joins.
//
// Any mode: a room link from createJoinToken's `roomUrl` (`/?room=<roomId>#token=<join token>`)
// opens the lobby straight for that room; no sign-in, the token says who joins.
//
// Dev mode: "Practise with an AI partner" starts a meeting from the deployment's default
// scenario (agent.js): the room has an AI persona, whose lines fill the transcript pane.
//
// `window.connvoConfig` (set before this script runs) overrides: `video` (getUserMedia video
// constraints), `iceServers`, `iceTransportPolicy` ('all' | 'relay'), `iceCandidateFilter`.

import { agentOf, createPractice, markAgentTile, renderAgentPlaceholder } from './agent.js';
import { Api, ConnvoError, DEFAULT_VIDEO, Room, captureLocalMedia } from './connvo.js';
import { DevicePickers } from './devices.js';
import { AudioLevels } from './levels.js';
import { PeoplePanel } from './people.js';
import { qualityOf } from './quality.js';
import { TabSession } from './session.js';

const config = window.connvoConfig ?? {};
const $ = (id) => document.getElementById(id);

const ICONS = {
  mic: '<svg class="icon" viewBox="0 0 24 24"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 1 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11h-2z"/></svg>',
  micOff: '<svg class="icon" viewBox="0 0 24 24"><path d="M19 11a7 7 0 0 1-1.2 3.9l-1.5-1.5c.4-.7.6-1.5.7-2.4H19zM15 11.2 9 5.2V5a3 3 0 1 1 6 0v6.2zM4.3 3 3 4.3l6 6V11a3 3 0 0 0 4.5 2.6l1.6 1.6A5 5 0 0 1 7 11H5a7 7 0 0 0 6 6.9V21h2v-3.1c1-.1 1.9-.5 2.7-1l4 4 1.3-1.3L4.3 3z"/></svg>',
  cam: '<svg class="icon" viewBox="0 0 24 24"><path d="M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11l-4 4z"/></svg>',
  camOff: '<svg class="icon" viewBox="0 0 24 24"><path d="m21 6.5-4 4V7a1 1 0 0 0-1-1H9.8L21 17.2V6.5zM3.3 2 2 3.3 4.7 6H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12c.2 0 .4-.1.5-.2l3.2 3.2 1.3-1.3L3.3 2z"/></svg>',
  screen: '<svg class="icon" viewBox="0 0 24 24"><path d="M20 18a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2H4a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2H0v2h24v-2h-4zM4 6h16v10H4V6zm8 1-4 4h3v4h2v-4h3l-4-4z"/></svg>',
  chat: '<svg class="icon" viewBox="0 0 24 24"><path d="M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2zM6 9h12v2H6V9zm8 5H6v-2h8v2zm4-6H6V6h12v2z"/></svg>',
  notes: '<svg class="icon" viewBox="0 0 24 24"><path d="M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8l-6-6zm2 16H8v-2h8v2zm0-4H8v-2h8v2zm-3-5V3.5L18.5 9H13z"/></svg>',
  captions: '<svg class="icon" viewBox="0 0 24 24"><path d="M19 4H5a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2zM11 11H9.5v-.5h-2v3h2V13H11v1a1 1 0 0 1-1 1H7a1 1 0 0 1-1-1v-4a1 1 0 0 1 1-1h3a1 1 0 0 1 1 1v1zm7 0h-1.5v-.5h-2v3h2V13H18v1a1 1 0 0 1-1 1h-3a1 1 0 0 1-1-1v-4a1 1 0 0 1 1-1h3a1 1 0 0 1 1 1v1z"/></svg>',
  people: '<svg class="icon" viewBox="0 0 24 24"><path d="M16 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm-8 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm0 2c-2.3 0-7 1.2-7 3.5V19h14v-2.5C15 14.2 10.3 13 8 13zm8 0h-1c1.2.8 2 2 2 3.5V19h6v-2.5c0-2.3-4.7-3.5-7-3.5z"/></svg>',
  leave: '<svg class="icon" viewBox="0 0 24 24"><path d="M12 9c-1.6 0-3.1.3-4.6.7v3.1c0 .4-.2.7-.6.9-1 .5-1.9 1.1-2.7 1.8a1 1 0 0 1-1.4 0L.3 13.1a1 1 0 0 1 0-1.4C3.3 8.9 7.5 7 12 7s8.7 1.9 11.7 4.7a1 1 0 0 1 0 1.4l-2.4 2.4a1 1 0 0 1-1.4 0c-.8-.7-1.7-1.3-2.7-1.8a1 1 0 0 1-.6-.9V9.7C15.1 9.3 13.6 9 12 9z"/></svg>',
  full: '<svg viewBox="0 0 24 24"><path d="M16 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm-8 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm0 2c-2.3 0-7 1.2-7 3.5V19h14v-2.5C15 14.2 10.3 13 8 13zm8 0h-1c1.2.8 2 2 2 3.5V19h6v-2.5c0-2.3-4.7-3.5-7-3.5z"/></svg>',
  clock: '<svg viewBox="0 0 24 24"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7V7z"/></svg>',
  ended: '<svg viewBox="0 0 24 24"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm5 11H7v-2h10v2z"/></svg>',
  wave: '<svg viewBox="0 0 24 24"><path d="M7 12.5V5a1.5 1.5 0 0 1 3 0v5h1V3.5a1.5 1.5 0 0 1 3 0V10h1V5a1.5 1.5 0 0 1 3 0v9.5c0 4.1-2.9 7.5-7 7.5-2.5 0-4.2-1.2-5.6-3.3L2.6 13a1.5 1.5 0 0 1 2.5-1.6L7 14v-1.5z"/></svg>',
  offline: '<svg viewBox="0 0 24 24"><path d="M12 4C7.3 4 3.1 5.9 0 9l12 12 12-12c-3.1-3.1-7.3-5-12-5zm1 13h-2v-2h2v2zm0-4h-2V8h2v5z"/></svg>',
  lock: '<svg viewBox="0 0 24 24"><path d="M18 8h-1V6A5 5 0 0 0 7 6v2H6a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V10a2 2 0 0 0-2-2zm-6 9a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm3.1-9H8.9V6a3.1 3.1 0 0 1 6.2 0v2z"/></svg>',
};

/** Human-readable messages for error codes from the hub and connvo.js. */
const NOTICES = {
  'room-full': { icon: 'full', title: 'This meeting is full',
    text: 'It already has four people in it, the most a call here can hold. Try again when someone leaves.', retry: 'Try again' },
  'invite-expired': { icon: 'clock', title: 'This invite link has expired',
    text: 'Invite links work for a limited time. Ask the host to send you a new one.' },
  'token-expired': { icon: 'clock', title: 'This link has expired',
    text: 'Your access to this meeting timed out. Open the invite link again or ask the host for a new one.' },
  'bad-invite': { icon: 'lock', title: "This link doesn't work",
    text: 'It may have been cut off when it was copied. Ask the host to send it again.' },
  'bad-token': { icon: 'lock', title: "This link doesn't work",
    text: 'It may have been cut off when it was copied. Ask the host to send it again.' },
  'room-ended': { icon: 'ended', title: 'This meeting has ended', text: 'The host ended the meeting for everyone.' },
  'room-closed': { icon: 'ended', title: 'This meeting has ended', text: 'Start a new meeting whenever you like.' },
  'ended-by-you': { icon: 'ended', title: 'You ended the meeting', text: 'Everyone has left the call.' },
  'waiting-for-host': { icon: 'clock', title: 'Waiting for the host to start the meeting',
    text: "You'll join automatically as soon as they start it. Keep this page open." },
  'meeting-concluded': { icon: 'ended', title: 'This meeting has ended', text: 'Ask the host to start a new one.' },
  'meeting-cancelled': { icon: 'ended', title: 'This meeting was cancelled', text: 'Ask the host to start a new one.' },
  'meeting-not-started': { icon: 'clock', title: "The meeting hasn't started yet",
    text: "You'll join automatically as soon as the host starts it.", retry: 'Try again' },
  'meeting-not-found': { icon: 'lock', title: "This meeting doesn't exist", text: 'Check the link, or start a new meeting.' },
  'taken-over': { icon: 'lock', title: 'You joined from somewhere else',
    text: 'This meeting is open in another tab or on another device, which now holds your place.' },
  kicked: { icon: 'lock', title: 'You were removed from the meeting', text: 'The host removed you from this call.' },
  forbidden: { icon: 'lock', title: "You can't join this meeting", text: 'You are not allowed in this room.' },
  'not-invited': { icon: 'lock', title: "You're not invited to this meeting", text: 'Ask the host for an invite link.' },
  'no-dev-login': { icon: 'lock', title: 'Sign-in is not available here',
    text: 'This server uses an identity provider, so the demo page cannot sign you in. Join through your meeting app instead.' },
  disconnected: { icon: 'offline', title: 'Lost connection to the meeting',
    text: 'Check your internet connection, then rejoin.', retry: 'Rejoin' },
  network: { icon: 'offline', title: "Can't reach the meeting server",
    text: 'Check your internet connection and try again.', retry: 'Try again' },
  left: { icon: 'wave', title: 'You left the meeting', text: 'See you next time.', retry: 'Rejoin' },
  denied: { icon: 'lock', title: "The host didn't let you in", text: 'Ask the host for another invitation if this was a mistake.' },
  'waiting-timeout': { icon: 'clock', title: 'Nobody let you in', text: "The host didn't answer in time. Try again, or ask them to look out for you.", retry: 'Try again' },
  'waiting-room-full': { icon: 'full', title: 'Too many people are waiting', text: 'The waiting room is full. Try again in a little while.', retry: 'Try again' },
  'max-duration': { icon: 'clock', title: 'This meeting has reached its time limit', text: 'It ended for everyone when its time ran out.' },
};

const state = {
  api: new Api(),
  room: null,
  preview: null, // MediaStream from the lobby, handed to the room
  previewReady: Promise.resolve(),
  mediaErrors: new Map(), // 'camera' | 'microphone' -> ConnvoError, for the lobby banner
  micOn: true,
  camOn: true,
  invite: new URLSearchParams(location.search).get('invite'),
  // A room link (createJoinToken's roomUrl): the join token rides in the fragment.
  linkToken: new URLSearchParams(location.hash.slice(1)).get('token'),
  inviteLink: '',
  title: '',
  name: '',
  joinedAt: 0,
  clock: null,
  panel: null, // 'chat' | 'transcript' | 'people' | null
  meetingClock: null, // {startedAt, serverTime, at}: the meeting's start, in the hub's clock
  linkCheck: null, // the invite link's meeting as the hub described it on page open
  waitTimer: null, // polling for the host to start the meeting
  endedByMe: false,
  session: new TabSession(),
  captions: localStorage.getItem('connvo.captions') === 'on', // this viewer's choice
  devices: { audio: null, video: null, speaker: localStorage.getItem('connvo.speaker') }, // chosen deviceIds
  quality: { timer: null, last: {} }, // per-peer connection quality from getStats every 2 s
  levels: null, // AudioLevels of the room: per-tile levels, active speaker, muted hint
  unread: 0,
  reconnectToast: null,
  endsAt: null, // unix ms: when the meeting reaches its time limit (once it is near)
  rejoin: null, // () => Promise<void> for "Rejoin" / "Try again"
};
const people = new PeoplePanel({
  list: $('people-list'),
  footer: $('people-footer'),
  room: () => state.room,
  selfName: () => state.name,
  initials: (name) => initials(name),
  toast: (text, opts) => toast(text, opts),
  onEnd: () => {
    state.endedByMe = true;
    state.room?.end();
  },
});
window.demo = state; // for tests and the curious: window.demo.room is the connvo Room

// ------------------------------------------------------------------------------ small helpers

function show(screen) {
  for (const id of ['lobby', 'room', 'waiting', 'notice']) $(id).hidden = id !== screen;
  $('app').dataset.screen = screen;
}

function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2);
  return letters.toUpperCase();
}

function hue(text) {
  let h = 0;
  for (const ch of String(text)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function paintAvatar(el, name) {
  const span = el.querySelector('span');
  span.textContent = initials(name);
  span.style.background = `linear-gradient(135deg, hsl(${hue(name)} 70% 58%), hsl(${(hue(name) + 40) % 360} 70% 46%))`;
}

/** Say something to screen readers (a polite live region), e.g. that someone muted. */
function announce(text) {
  const el = $('announcer');
  el.textContent = '';
  // A new text node each time, so the same words said twice are announced twice.
  requestAnimationFrame(() => { el.textContent = text; });
}

function toast(text, { kind = 'info', ms = 4000, sticky = false } = {}) {
  const el = document.createElement('div');
  el.className = `toast ${kind}`;
  el.textContent = text;
  $('toasts').append(el);
  const remove = () => { el.classList.add('leaving'); setTimeout(() => el.remove(), 250); };
  if (!sticky) setTimeout(remove, ms);
  return remove;
}

/** `pressed`: the button's aria-pressed (null: not a toggle). Mute and Stop video are
 * pressed while muted / stopped; Share screen, Chat, People and Transcript while on / open. */
function setControl(button, on, { icon, iconOff, label, labelOff, title, titleOff, pressed = !on }) {
  button.dataset.on = String(on);
  if (pressed === null) button.removeAttribute('aria-pressed');
  else button.setAttribute('aria-pressed', String(pressed));
  const badge = button.querySelector('.badge');
  button.innerHTML = `${on ? icon : iconOff}<span class="label">${on ? label : labelOff}</span>`;
  if (badge) button.prepend(badge);
  button.title = on ? title : titleOff;
}

function formatTime(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function notice(code, { message, waiting = false } = {}) {
  if (!waiting) clearTimeout(state.waitTimer);
  const entry = NOTICES[code] ?? { icon: 'offline', title: 'Something went wrong', text: message || code };
  $('notice-card').dataset.code = code;
  $('notice-icon').innerHTML = ICONS[entry.icon] ?? '';
  $('notice-title').textContent = entry.title;
  $('notice-text').textContent = entry.text;
  const primary = $('notice-primary');
  const secondary = $('notice-secondary');
  if (waiting) {
    primary.textContent = 'Cancel';
    primary.onclick = () => {
      clearTimeout(state.waitTimer);
      show('lobby');
      state.previewReady = startPreview();
    };
    secondary.hidden = true;
  } else if (entry.retry && state.rejoin) {
    primary.textContent = entry.retry;
    primary.onclick = () => state.rejoin();
    secondary.hidden = false;
    secondary.textContent = 'Start a new meeting';
    secondary.onclick = () => { location.href = '/'; };
  } else {
    primary.textContent = 'Start a new meeting';
    primary.onclick = () => { location.href = '/'; };
    secondary.hidden = true;
  }
  stopPreview();
  state.levels?.close();
  show('notice');
}

// ------------------------------------------------------------------------------ lobby

function renderPreviewControls() {
  setControl($('preview-mic'), state.micOn, { icon: ICONS.mic, iconOff: ICONS.micOff, label: '',
    labelOff: '', title: 'Turn off microphone', titleOff: 'Turn on microphone' });
  setControl($('preview-cam'), state.camOn, { icon: ICONS.cam, iconOff: ICONS.camOff, label: '',
    labelOff: '', title: 'Turn off camera', titleOff: 'Turn on camera' });
  const hasVideo = Boolean(state.preview?.getVideoTracks().length) && state.camOn;
  $('preview').dataset.video = hasVideo ? 'on' : 'off';
  $('preview-hint').textContent = hasVideo ? 'Camera preview' : 'Camera is off';
  paintAvatar($('preview-avatar'), $('name').value || '?');
}

/** The lobby's device warning, from the latest attempt per device (a retry that worked
 * clears that device's entry). `errors` are ConnvoErrors from captureLocalMedia. */
function mediaBanner(errors, tried = ['microphone', 'camera']) {
  for (const device of tried) state.mediaErrors.delete(device);
  for (const err of errors) state.mediaErrors.set(err.code.startsWith('camera') ? 'camera' : 'microphone', err);
  const all = [...state.mediaErrors.values()];
  const blocked = all.filter((e) => e.code.endsWith('-blocked'));
  const first = blocked[0] ?? all[0];
  if (!first) {
    $('media-banner').hidden = true;
    return;
  }
  $('media-banner').dataset.code = first.code;
  $('media-banner-title').textContent = blocked.length > 1 ? 'Camera and microphone are blocked'
    : blocked.length ? `Your ${first.code.startsWith('camera') ? 'camera' : 'microphone'} is blocked`
      : first.message;
  $('media-banner-text').textContent = blocked.length
    ? 'Allow access from the icon in the address bar, then reload. You can still join to listen and chat.'
    : 'You can still join the meeting.';
  $('media-banner').hidden = false;
}

async function startPreview() {
  const pick = (id) => (id ? { deviceId: { exact: id } } : {});
  const { stream, errors } = await captureLocalMedia({
    audio: state.devices.audio ? pick(state.devices.audio) : true,
    videoConstraints: { ...(config.video ?? DEFAULT_VIDEO), ...pick(state.devices.video) } });
  state.preview = stream;
  if (!stream.getAudioTracks().length) state.micOn = false;
  if (!stream.getVideoTracks().length) state.camOn = false;
  showPreview();
  mediaBanner(errors);
  renderPreviewControls();
  const of = (track) => track?.getSettings?.().deviceId ?? null;
  await lobbyPickers.refresh({ audio: of(stream.getAudioTracks()[0]), video: of(stream.getVideoTracks()[0]),
    speaker: state.devices.speaker });
}

function showPreview() {
  // A media element given a stream without video never loads, and holds the page's load
  // event (the tab would spin forever): attach only a stream that has video.
  const stream = state.preview;
  $('preview-video').srcObject = stream?.getVideoTracks().length ? stream : null;
}

function stopPreview() {
  for (const track of state.preview?.getTracks() ?? []) track.stop();
}

async function togglePreviewCam() {
  await state.previewReady;  // a click before the preview exists acts on it once it does
  if (state.camOn) {
    state.camOn = false;
    for (const track of state.preview.getVideoTracks()) {
      track.stop();
      state.preview.removeTrack(track);
    }
  } else {
    const device = state.devices.video ? { deviceId: { exact: state.devices.video } } : {};
    const { stream, errors } = await captureLocalMedia({ audio: false,
      videoConstraints: { ...(config.video ?? DEFAULT_VIDEO), ...device } });
    for (const track of stream.getVideoTracks()) state.preview.addTrack(track);
    state.camOn = stream.getVideoTracks().length > 0;
    mediaBanner(errors, ['camera']);
    showPreview();
  }
  renderPreviewControls();
}

async function togglePreviewMic() {
  await state.previewReady;
  let track = state.preview?.getAudioTracks()[0];
  if (!track) {
    // Blocked or missing before: ask again (the browser may have been told to allow it).
    const { stream, errors } = await captureLocalMedia({ video: false });
    track = stream.getAudioTracks()[0];
    mediaBanner(errors, ['microphone']);
    if (!track) return;
    state.preview.addTrack(track);
    state.micOn = true;
  } else {
    state.micOn = !state.micOn;
  }
  track.enabled = state.micOn;
  renderPreviewControls();
}

/** The claims of a JWT, read without checking it (the hub checks it on join), or null. */
function claimsOf(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

// What the lobby's fine print promises follows the boxes the host ticks: it must stay true.
function renderFineprint() {
  const transcript = $('transcribe').checked;
  const record = $('record').checked;
  let kept = 'Nothing is recorded.';
  if ($('record-field').hidden) {
    // A guest: the host chose; the room says so (REC, Transcribing) once you are in.
    kept = 'If the host records or transcribes the meeting, the room shows REC or Transcribing.';
  } else if (record) {
    kept = `Everyone's audio is recorded and kept on this server${transcript ? ', with the live transcript' : ''}; everyone sees REC.`;
  } else if (transcript) {
    kept = "Nothing is recorded, except the live transcript's text, which the meeting keeps.";
  }
  $('fineprint').textContent = `Audio and video go directly between participants. ${kept}`;
}

function setupLobby() {
  const saved = localStorage.getItem('connvo.name') ?? '';
  $('name').value = saved;
  $('email').value = localStorage.getItem('connvo.email') ?? '';
  if (state.linkToken) {
    const claims = claimsOf(state.linkToken);
    $('join-eyebrow').textContent = "You're invited";
    $('join-heading').textContent = 'Join the meeting';
    $('join-lede').textContent = 'Check your camera and microphone, then join.';
    if (claims?.name) $('name').value = claims.name;
    for (const id of ['title-field', 'transcribe-field', 'waiting-room-field', 'record-field', 'email-field', 'practice-field']) $(id).hidden = true;
    $('join-button').textContent = 'Join meeting';
  } else if (state.invite) {
    $('join-eyebrow').textContent = "You're invited";
    $('join-heading').textContent = 'Join the meeting';
    $('join-lede').textContent = 'Check your camera and microphone, tell the others your name, and join.';
    $('title-field').hidden = true;
    $('transcribe-field').hidden = true;
    $('waiting-room-field').hidden = true;
    $('record-field').hidden = true;
    $('practice-field').hidden = true;
    $('join-button').textContent = 'Join meeting';
  }
  $('name').addEventListener('input', renderPreviewControls);
  $('preview-mic').addEventListener('click', togglePreviewMic);
  $('preview-cam').addEventListener('click', togglePreviewCam);
  $('transcribe').addEventListener('change', renderFineprint);
  $('record').addEventListener('change', renderFineprint);
  $('join-form').addEventListener('submit', (event) => {
    event.preventDefault();
    submitLobby();
  });
  $('practice-button').addEventListener('click', submitPractice);
  renderPreviewControls();
  renderFineprint();
  if (state.invite && inviteExpired(state.invite)) {
    notice('invite-expired');
    return;
  }
  if (!state.invite) {
    state.previewReady = startPreview();
    return;
  }
  // An invite link: find out where it leads before the camera goes on.
  const resuming = state.session.load(state.invite);
  state.previewReady = checkLink().then((ok) => {
    if (!ok) return undefined;
    if (resuming) return resumeSession(resuming);
    return startPreview();
  });
}

/** The invite link's meeting, asked of the hub when the page opens: a broken, expired or
 * ended link is a notice before anyone types a name or turns a camera on. True when the
 * lobby should go on. */
async function checkLink() {
  const button = $('join-button');
  const label = button.textContent;
  button.disabled = true;
  button.textContent = 'Checking the link…';
  try {
    const meeting = await state.api.checkInvite(state.invite);
    state.linkCheck = meeting;
    if (!meeting.valid) {
      notice(NOTICES[meeting.code] ? meeting.code : 'bad-invite', { message: meeting.message });
      return false;
    }
    if (meeting.state === 'concluded' || meeting.state === 'cancelled') {
      notice(`meeting-${meeting.state}`);
      return false;
    }
    $('join-heading').textContent = meeting.title ? `Join “${meeting.title}”` : 'Join the meeting';
    if (meeting.state === 'scheduled') {
      $('join-lede').textContent = "The host hasn't started this meeting yet. Join now and you'll go in as soon as they do.";
    }
    return true;
  } catch (err) {
    notice(NOTICES[err.code] ? err.code : 'bad-invite', { message: err.message });
    return false;
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

/** Until the host starts the meeting: a waiting notice, the hub asked every 2 s; then join. */
function waitForStart(join) {
  clearTimeout(state.waitTimer);
  stopPreview();
  notice('waiting-for-host', { waiting: true });
  const poll = async () => {
    let meeting = null;
    try {
      meeting = await state.api.checkInvite(state.invite);
    } catch {
      // the hub is unreachable for a moment: ask again at the next tick
    }
    if ($('notice-card').dataset.code !== 'waiting-for-host') return; // cancelled
    if (meeting && !meeting.valid) {
      notice(NOTICES[meeting.code] ? meeting.code : 'bad-invite', { message: meeting.message });
    } else if (meeting?.state === 'concluded' || meeting?.state === 'cancelled') {
      notice(`meeting-${meeting.state}`);
    } else if (meeting?.state === 'active') {
      try {
        show('lobby');
        await startPreview();
        await join();
      } catch (err) {
        fail(err);
      }
    } else {
      state.waitTimer = setTimeout(poll, 2000);
    }
  };
  state.waitTimer = setTimeout(poll, 2000);
}

/** Whether an invite link's token says it expired (checked again by the hub on join). */
function inviteExpired(invite) {
  try {
    const payload = JSON.parse(atob(invite.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return typeof payload.exp === 'number' && payload.exp * 1000 < Date.now();
  } catch {
    return false; // not ours to judge: the hub says what is wrong with it
  }
}

function lobbyError(text) {
  $('join-error').textContent = text;
  $('join-error').hidden = !text;
}

/** The name typed in the lobby, once the preview is ready, remembered for next time; '' (the
 * field focused, ``missing`` shown) when none was typed. */
async function lobbyName(missing) {
  const name = $('name').value.trim();
  if (!name) {
    lobbyError(missing);
    $('name').focus();
    return '';
  }
  lobbyError('');
  await state.previewReady;
  state.name = name;
  localStorage.setItem('connvo.name', name);
  return name;
}

/** Without an email, a per-tab guest identity: two tabs are two people. */
function guestEmail() {
  let email = sessionStorage.getItem('connvo.guest');
  if (!email) {
    email = `guest-${crypto.randomUUID().slice(0, 8)}@guest.connvo.dev`;
    sessionStorage.setItem('connvo.guest', email);
  }
  return email;
}

/** The dev sign-in; a hub without it (an identity provider signs people in) is a notice. */
async function devSignIn(email, name) {
  try {
    await state.api.devLogin({ email, name });
  } catch (err) {
    if (err.status === 404 || err.code === 'not-found') throw new ConnvoError('no-dev-login', err.message);
    throw err;
  }
}

/** "Rejoin" / "Try again" for a room entered with ``fetchJoin()``'s answer. */
function rejoinThrough(fetchJoin) {
  return async () => {
    show('lobby');
    try {
      await startPreview();
      await enterRoom(await fetchJoin());
    } catch (err) {
      fail(err);
    }
  };
}

async function submitLobby() {
  const name = await lobbyName('Please enter your name so the others know who you are.');
  if (!name) return;
  const typed = $('email').value.trim().toLowerCase();
  if (typed) localStorage.setItem('connvo.email', typed);
  const email = typed || guestEmail();
  state.email = email;
  const button = $('join-button');
  const label = button.textContent;
  button.disabled = true;
  button.textContent = state.invite || state.linkToken ? 'Joining…' : 'Starting…';
  if (state.linkToken) {
    // A room link: the token is the whole invitation (any mode, no sign-in).
    const join = { wsUrl: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
      token: state.linkToken };
    state.fetchJoin = async () => join;
    state.rejoin = rejoinThrough(state.fetchJoin);
    try {
      await enterRoom(join);
    } catch (err) {
      fail(err);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
    return;
  }
  try {
    await devSignIn(email, name);
    let join;
    if (state.invite) {
      state.fetchJoin = () => state.api.joinByInvite(state.invite);
      state.inviteLink = location.href;
      const waitThenJoin = () => waitForStart(async () => {
        const started = await state.fetchJoin();
        state.title = started.title;
        setupRejoin();
        await enterRoom(started);
      });
      // Not started yet: wait for the host rather than be refused (asked again, it may
      // have started while the name was typed).
      const check = await state.api.checkInvite(state.invite);
      if (check.valid && check.state === 'scheduled') {
        waitThenJoin();
        return;
      }
      try {
        join = await state.fetchJoin();
      } catch (err) {
        if (err.code !== 'meeting-not-started') throw err;
        waitThenJoin();
        return;
      }
      state.title = join.title;
    } else {
      const title = $('title').value.trim() || `${name.split(/\s+/)[0]}'s meeting`;
      // Transcription is the meeting's to choose at creation (the hub then sends it a tap).
      const meeting = await state.api.createMeeting({ title,
        transcriptionEnabled: $('transcribe').checked,
        waitingRoomEnabled: $('waiting-room').checked, recordingEnabled: $('record').checked });
      await state.api.startMeeting(meeting.meetingId);
      const { invite } = await state.api.createInvite(meeting.meetingId);
      state.invite = invite;
      state.title = title;
      state.inviteLink = `${location.origin}/?invite=${encodeURIComponent(invite)}`;
      history.replaceState(null, '', `/?invite=${encodeURIComponent(invite)}`);
      // The host's own link makes them host; its answer carries the meeting's start time.
      state.fetchJoin = () => state.api.joinByInvite(invite);
      join = await state.fetchJoin();
    }
    setupRejoin();
    await enterRoom(join);
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

/** "Rejoin" / "Try again" on a notice: back through the lobby's preview into the room. */
function setupRejoin() {
  state.rejoin = async () => {
    show('lobby');
    $('join-button').disabled = true;
    try {
      await startPreview();
      await enterRoom(await state.api.joinByInvite(state.invite));
    } catch (err) {
      fail(err);
    } finally {
      $('join-button').disabled = false;
    }
  };
}

/** "Practise with an AI partner": sign in with the name, create a meeting from the default
 * scenario (its room starts at once and the persona joins it) and go straight in. */
async function submitPractice() {
  const name = await lobbyName('Please enter your name so your practice partner knows what to call you.');
  if (!name) return;
  const button = $('practice-button');
  const label = button.textContent;
  button.disabled = true;
  $('join-button').disabled = true;
  button.textContent = 'Starting…';
  try {
    state.email = guestEmail();
    await devSignIn(state.email, name);
    const { scenario, meeting } = await createPractice(state.api, name, ConnvoError);
    state.title = scenario.title;
    // A reload reopens the room link (the lobby for this room, then in again).
    history.replaceState(null, '', meeting.roomUrl.slice(meeting.roomUrl.indexOf('/?')));
    state.fetchJoin = () => state.api.createJoinToken(meeting.meetingId);
    state.rejoin = rejoinThrough(state.fetchJoin);
    await enterRoom({ wsUrl: meeting.wsUrl, token: meeting.roomToken,
      startedAt: meeting.startedAt, serverTime: meeting.serverTime });
  } catch (err) {
    if (err.code === 'no-scenarios') lobbyError(err.message);
    else fail(err);
  } finally {
    button.disabled = false;
    $('join-button').disabled = false;
    button.textContent = label;
  }
}

/** A reload of a page that was in the room: straight back in, resuming the seat this tab's
 * session kept (same peerId when the hub still holds it; a fresh join when not). */
async function resumeSession(saved) {
  state.name = saved.name;
  state.micOn = saved.micOn;
  state.camOn = saved.camOn;
  $('name').value = saved.name;
  try {
    await state.api.devLogin({ email: saved.email, name: saved.name });
    state.fetchJoin = () => state.api.joinByInvite(state.invite);
    state.inviteLink = location.href;
    const join = await state.fetchJoin();
    state.title = join.title;
    setupRejoin();
    await startPreview();
    await enterRoom(join, { resume: saved.resumeToken });
  } catch (err) {
    state.session.clear();
    fail(err);
  }
}

/** A failure before or while joining: a notice for what we can name, else a lobby message. */
function fail(err) {
  const code = err?.code ?? 'error';
  if (NOTICES[code] && code !== 'left') {
    notice(code, { message: err.message });
  } else {
    show('lobby');
    lobbyError(err?.message ? `Couldn't join: ${err.message}` : "Couldn't join the meeting.");
  }
}

// ------------------------------------------------------------------------------ room

async function enterRoom(join, { resume = null } = {}) {
  const room = new Room({
    wsUrl: join.wsUrl,
    token: join.token,
    iceServers: config.iceServers,
    iceTransportPolicy: config.iceTransportPolicy ?? 'all',
    iceCandidateFilter: config.iceCandidateFilter ?? null,
    localStream: state.preview,
    audio: state.micOn,
    video: state.camOn,
    videoConstraints: config.video,
    devices: { audio: state.devices.audio, video: state.devices.video },
    name: state.name,
    // A resume needs an unexpired join token: fetch a fresh one for a long meeting.
    refreshToken: async () => (await state.fetchJoin()).token,
  });
  state.room = room;
  state.levels?.close();
  state.levels = new AudioLevels(renderLevels);
  bindRoom(room);
  $('tiles').replaceChildren();
  $('chat-log').replaceChildren();
  $('transcript-log').replaceChildren();
  $('chat-empty').hidden = false;
  $('transcript-empty').hidden = false;
  $('knocks').replaceChildren();
  $('ending-banner').hidden = true;
  await room.join({ resume });
  state.joinedAt = Date.now();
  state.endedByMe = false;
  // The clock shows how long the meeting has run, in the hub's clock (ours may be off).
  state.meetingClock = join.startedAt
    ? { startedAt: join.startedAt, serverTime: join.serverTime ?? Date.now(), at: Date.now() } : null;
  state.session.save({ invite: state.invite, resumeToken: room.resumeToken, name: state.name,
    email: state.email, micOn: room.micEnabled, camOn: room.cameraEnabled });
  const agent = agentOf(room);
  if (agent && !state.title) state.title = `Practice with ${agent.name}`;
  $('room-title').textContent = state.title || 'Meeting';
  document.title = `${state.title || 'Meeting'} · connvo`;
  $('self-label').textContent = state.name;
  // What the room's controls do not let us send has no button (hosts are exempt).
  $('screen-button').hidden = !room.maySend('screen') || !navigator.mediaDevices?.getDisplayMedia;
  $('chat-button').hidden = room.features.chat === false;
  $('tab-chat').hidden = room.features.chat === false; // no chat: no empty chat tab either
  $('cam-button').hidden = !room.maySend('video');
  $('mic-button').hidden = !room.maySend('audio');
  $('copy-link').hidden = !state.inviteLink;
  if (room.endsAt && room.endsAt - Date.now() <= 60_000) showEnding(room.endsAt);
  renderSelfTile();
  renderControls();
  renderCount();
  state.levels.watchSelf(room.micTrack);
  watchQuality(room);
  renderAgent();
  // A conversation with an AI partner: its words (and yours) are the point, so show them.
  if (agent) {
    $('transcript-empty').textContent = `What you and ${agent.name} say will appear here.`;
    if (state.panel !== 'transcript') openPanel('transcript');
  }
  show('room');
  clearInterval(state.clock);
  state.clock = setInterval(renderClock, 1000);
  renderClock();
}

function bindRoom(room) {
  room.on('peer-joined', ({ peer }) => {
    upsertTile(peer);
    renderAgent();
    renderCount();
    people.render();
    if (room.state === 'joined') announce(`${peer.name || 'A guest'} joined`);
  });
  room.on('peer-updated', ({ peer }) => {
    announceMediaChange(peer);
    upsertTile(peer);
    renderScreens();
    people.render();
  });
  room.on('peer-left', ({ peer, reason }) => {
    state.levels?.unwatch(peer.peerId);
    removeTile(peer.peerId);
    renderAgent();
    renderCount();
    people.render();
    if (reason !== 'reconnected' && room.state === 'joined') toast(`${peer.name || 'Someone'} left`);
  });
  room.on('track', ({ peer, track, source }) => {
    if (source === 'microphone') state.levels?.watch(peer.peerId, track);
    upsertTile(peer);
    renderScreens();
  });
  room.on('connection-state', ({ peer }) => upsertTile(peer));
  room.on('local-media', () => {
    state.levels?.watchSelf(room.micTrack);
    people.render();
    renderSelfTile();
    renderControls();
    renderScreens();
  });
  room.on('chat', addChat);
  room.on('transcript', addTranscript);
  room.on('transcription', ({ active }) => {
    renderControls();
    $('transcribing').hidden = !active;
    document.querySelector('.transcribing-sep').hidden = !active;
    if (active) showTranscription('live'); // a new tap starts afresh
  });
  room.on('recording', ({ state: now }) => {
    $('recording-badge').hidden = now !== 'recording';
  });
  room.on('transcript-status', ({ state: status, peerId, name, dropped }) => {
    showTranscription(status);
    if (status === 'dropping' && dropped > 0) addTranscriptGap(peerId, name);
  });
  room.on('state', ({ state: now }) => {
    $('conn-status').dataset.state = now;
    $('conn-status').textContent = now === 'reconnecting' ? 'Reconnecting…' : '';
  });
  room.on('reconnecting', ({ attempt }) => {
    if (attempt === 2) state.reconnectToast = toast('Reconnecting to the meeting…', { kind: 'warn', sticky: true });
  });
  room.on('reconnected', ({ resumed }) => {
    state.reconnectToast?.();
    state.reconnectToast = null;
    if (!resumed) toast('Reconnected');
  });
  room.on('joined', () => state.session.update({ resumeToken: room.resumeToken }));
  room.on('ended', ({ reason }) => {
    clearInterval(state.clock);
    state.session.clear();
    // Who ended it, in words: you, the host, or the meeting itself (time limit, empty).
    if (state.endedByMe) notice('ended-by-you');
    else if (reason === 'max-duration') notice('max-duration');
    else notice(/host/.test(reason ?? '') ? 'room-ended' : 'room-closed');
  });
  room.on('mute-requested', ({ name }) => {
    toast(`${name || 'The host'} asked you to mute. You're muted — unmute when you want to speak.`,
      { kind: 'warn', ms: 7000 });
    renderControls();
  });
  room.on('local-media', () => state.session.update({ micOn: room.micEnabled, camOn: room.cameraEnabled }));
  room.on('waiting', () => show('waiting'));
  room.on('knock', ({ peer }) => addKnock(room, peer));
  room.on('knock-ended', ({ peerId }) => removeKnock(peerId));
  room.on('room-ending', ({ endsAt }) => showEnding(endsAt));
  room.on('error', (err) => {
    if (room !== state.room) return;
    if (err.fatal && room.state === 'failed' && state.joinedAt) {
      clearInterval(state.clock);
      state.session.clear();
      notice(NOTICES[err.code] ? err.code : 'disconnected', { message: err.message });
    } else if (!err.fatal) {
      const quiet = ['negotiation-failed'];
      if (!quiet.includes(err.code)) toast(err.message, { kind: 'warn' });
      else console.warn('connvo:', err);
    }
  });
}

// ------------------------------------------------------------------------------ waiting room

/** Host: someone knocks; Admit or Deny. The card goes when the knock ends (any host answered,
 * the guest left or gave up). */
function addKnock(room, peer) {
  if (document.querySelector(`.knock[data-peer-id="${CSS.escape(peer.peerId)}"]`)) return;
  const card = document.createElement('div');
  card.className = 'knock';
  card.dataset.peerId = peer.peerId;
  card.setAttribute('role', 'group');
  card.innerHTML = `<span class="knock-text"><b></b> wants to join</span>
    <button type="button" class="button primary">Admit</button>
    <button type="button" class="button ghost">Deny</button>`;
  card.querySelector('b').textContent = peer.name || 'A guest';
  card.setAttribute('aria-label', `${peer.name || 'A guest'} wants to join`);
  const [admit, deny] = card.querySelectorAll('button');
  const answer = (yes) => {
    admit.disabled = deny.disabled = true;
    if (!(yes ? room.admit(peer.peerId) : room.deny(peer.peerId))) admit.disabled = deny.disabled = false;
  };
  admit.addEventListener('click', () => answer(true));
  deny.addEventListener('click', () => answer(false));
  $('knocks').append(card);
  toast(`${peer.name || 'A guest'} is waiting to join`);
}

function removeKnock(peerId) {
  document.querySelector(`.knock[data-peer-id="${CSS.escape(peerId)}"]`)?.remove();
}

/** The meeting's time limit is near: a banner counting down to `endsAt`. */
function showEnding(endsAt) {
  state.endsAt = endsAt;
  $('ending-banner').hidden = false;
  renderEnding();
}

function renderEnding() {
  if (!state.endsAt || $('ending-banner').hidden) return;
  const left = Math.max(0, Math.ceil((state.endsAt - Date.now()) / 1000));
  $('ending-banner').textContent = left > 0
    ? `This meeting reaches its time limit in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`
    : 'This meeting has reached its time limit';
}

const QUALITY_WORDS = { good: 'good', fair: 'fair', poor: 'poor', unknown: 'connecting' };

/** Every 2 s: each tile's connection quality (good / fair / poor) from the room's stats. */
function watchQuality(room) {
  clearInterval(state.quality.timer);
  state.quality.last = {};
  state.quality.timer = setInterval(async () => {
    if (room !== state.room || room.state !== 'joined') {
      if (room !== state.room || ['left', 'ended', 'failed'].includes(room.state)) clearInterval(state.quality.timer);
      return;
    }
    const stats = await room.getStats();
    for (const [peerId, now] of Object.entries(stats)) {
      const quality = qualityOf(now, state.quality.last[peerId] ?? null);
      state.quality.last[peerId] = now;
      const tile = document.querySelector(`.tile[data-key="${CSS.escape(peerId)}"]`);
      if (!tile || tile.dataset.quality === quality) continue;
      tile.dataset.quality = quality;
      const dot = tile.querySelector('.conn-dot');
      dot.title = `Connection: ${QUALITY_WORDS[quality]}`;
      dot.setAttribute('aria-label', dot.title);
      const peer = room.peers.get(peerId);
      if (peer) {
        labelTile(tile, peer.isAgent ? `${peer.name}, AI partner` : peer.name || 'Guest',
          { audio: tile.dataset.audio === 'on', video: tile.dataset.video === 'on' });
      }
    }
  }, 2000);
}

/** Levels on the tiles, the active speaker's highlight and the "you are muted" hint. */
function renderLevels({ levels, speaker, talkingWhileMuted }) {
  const room = state.room;
  if (!room) return;
  for (const tile of document.querySelectorAll('.tile:not(.screen-tile)')) {
    const key = tile.dataset.peerId === room.peerId ? 'self' : tile.dataset.peerId;
    const muted = tile.dataset.audio === 'off';
    tile.style.setProperty('--level', String(muted ? 0 : (levels.get(key) ?? 0)));
    tile.dataset.speaking = String(key === speaker && !muted);
  }
  const hint = $('muted-hint');
  if (hint.hidden === talkingWhileMuted) hint.hidden = !talkingWhileMuted;
}

function renderClock() {
  renderEnding();
  const base = state.meetingClock;
  const ms = base ? base.serverTime - base.startedAt + (Date.now() - base.at) : Date.now() - state.joinedAt;
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  $('room-clock').textContent = hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

function renderCount() {
  const n = (state.room?.peers.size ?? 0) + 1;
  $('room-count').textContent = `${n} ${n === 1 ? 'person' : 'people'}`;
  const tiles = $('tiles');
  tiles.dataset.count = String(tiles.querySelectorAll('.tile:not(.screen-tile)').length);
  renderInviteCard();
}

function renderInviteCard() {
  let card = document.querySelector('.invite-card');
  const alone = (state.room?.peers.size ?? 0) === 0 && Boolean(state.inviteLink);
  if (!alone) {
    card?.remove();
    $('tiles').classList.remove('alone');
    return;
  }
  $('tiles').classList.add('alone');
  if (card) return;
  card = document.createElement('div');
  card.className = 'invite-card';
  card.innerHTML = `<h3>You're the only one here</h3>
    <p>Send this link to the people you want to meet (up to three more).</p>
    <div class="invite-row"><input readonly aria-label="Invite link"><button type="button" class="button primary">Copy link</button></div>`;
  card.querySelector('input').value = state.inviteLink;
  card.querySelector('button').addEventListener('click', copyLink);
  $('tiles').append(card);
}

function tileFor(id, { self = false, screen = false } = {}) {
  const key = screen ? `${id}:screen` : id;
  let tile = document.querySelector(`.tile[data-key="${CSS.escape(key)}"]`);
  if (tile) return tile;
  tile = document.createElement('div');
  tile.className = `tile${self ? ' self' : ''}${screen ? ' screen-tile' : ''}`;
  tile.setAttribute('role', 'group');
  tile.dataset.key = key;
  tile.dataset.peerId = id;
  tile.innerHTML = `
    <video autoplay playsinline ${self ? 'muted' : ''}></video>
    <div class="avatar" aria-hidden="true"><span></span></div>
    <div class="tile-status" aria-live="polite"></div>
    <div class="nametag">
      <span class="mic-off" aria-hidden="true">${ICONS.micOff}</span>
      <span class="conn-dot" role="img" aria-label="Connection: connecting" title="Connection: connecting"></span>
      <span class="level" aria-hidden="true"><i></i><i></i><i></i></span>
      <span class="name"></span>
    </div>`;
  const tiles = $('tiles');
  const invite = tiles.querySelector('.invite-card');
  if (screen) tiles.prepend(tile);
  else if (self) tiles.insertBefore(tile, tiles.querySelector('.tile:not(.screen-tile)') ?? invite);
  else tiles.insertBefore(tile, invite);
  return tile;
}

function attach(video, stream) {
  if (video.srcObject !== stream) {
    video.srcObject = stream;
    video.play().catch(() => {});
  }
}

const STATUS_TEXT = { new: 'Connecting…', connecting: 'Connecting…', disconnected: 'Reconnecting…',
  failed: 'Connection lost', closed: 'Disconnected' };

function upsertTile(peer) {
  const tile = tileFor(peer.peerId);
  const hasVideo = peer.media.video && peer.stream.getVideoTracks().length > 0;
  // The AI partner has no microphone to mute: its voice is on whenever it speaks.
  const audio = peer.media.audio || peer.isAgent;
  tile.dataset.state = peer.state;
  tile.dataset.audio = audio ? 'on' : 'off';
  tile.dataset.video = hasVideo ? 'on' : 'off';
  tile.querySelector('.name').textContent = peer.name || 'Guest';
  if (peer.isAgent) markAgentTile(tile);
  labelTile(tile, peer.isAgent ? `${peer.name}, AI partner` : peer.name || 'Guest', { audio, video: hasVideo });
  tile.querySelector('.tile-status').textContent = STATUS_TEXT[peer.state] ?? '';
  paintAvatar(tile.querySelector('.avatar'), peer.name || 'Guest');
  attach(tile.querySelector('video'), peer.stream);
  routeAudio(tile.querySelector('video'));
}

/** A tile's accessible name says who it is and what they send: "Grace Hopper, muted, camera
 * off". */
function labelTile(tile, name, { audio, video }) {
  const bits = [name];
  if (!audio) bits.push('muted');
  if (!video) bits.push('camera off');
  if (tile.dataset.quality === 'poor') bits.push('poor connection');
  tile.setAttribute('aria-label', bits.join(', '));
}

/** "Grace Hopper muted" / "... turned their camera off", said when a peer's flags change. */
function announceMediaChange(peer) {
  const tile = document.querySelector(`.tile[data-key="${CSS.escape(peer.peerId)}"]`);
  if (!tile) return;
  const name = peer.name || 'A guest';
  const was = { audio: tile.dataset.audio === 'on', video: tile.dataset.video === 'on' };
  if (was.audio !== peer.media.audio) announce(`${name} ${peer.media.audio ? 'unmuted' : 'muted'}`);
  if (was.video !== peer.media.video) {
    announce(`${name} turned their camera ${peer.media.video ? 'on' : 'off'}`);
  }
}

/** The meeting's AI partner: a "<name> is joining…" tile until it has a seat. */
function renderAgent() {
  renderAgentPlaceholder($('tiles'), state.room, { initials, paint: (el, name) => paintAvatar(el, name) });
}

function removeTile(peerId) {
  for (const tile of document.querySelectorAll(`.tile[data-peer-id="${CSS.escape(peerId)}"]`)) tile.remove();
}

function renderSelfTile() {
  const room = state.room;
  if (!room?.peerId) return;
  const tile = tileFor(room.peerId, { self: true });
  const media = room.media;
  tile.dataset.state = 'connected';
  tile.dataset.audio = media.audio ? 'on' : 'off';
  tile.dataset.video = media.video ? 'on' : 'off';
  tile.querySelector('.name').textContent = `${state.name} (you)`;
  labelTile(tile, `${state.name} (you)`, media);
  paintAvatar(tile.querySelector('.avatar'), state.name);
  attach(tile.querySelector('video'), room.localStream);
}

/** One big tile per screen being shared (ours included). */
function renderScreens() {
  const room = state.room;
  if (!room) return;
  const sharing = new Map();
  for (const peer of room.peers.values()) {
    if (peer.media.screen && peer.screenStream.getVideoTracks().length) sharing.set(peer.peerId, [peer.name, peer.screenStream]);
  }
  if (room.screenStream) sharing.set(room.peerId, ['You', room.screenStream]);
  for (const tile of document.querySelectorAll('.screen-tile')) {
    if (!sharing.has(tile.dataset.peerId)) tile.remove();
  }
  for (const [peerId, [name, stream]] of sharing) {
    const tile = tileFor(peerId, { screen: true, self: peerId === room.peerId });
    tile.dataset.video = 'on';
    tile.dataset.audio = 'on';
    tile.querySelector('.name').textContent = peerId === room.peerId ? 'You are presenting' : `${name}'s screen`;
    tile.setAttribute('aria-label', tile.querySelector('.name').textContent);
    attach(tile.querySelector('video'), stream);
  }
  $('tiles').classList.toggle('presenting', sharing.size > 0);
}

function renderControls() {
  const room = state.room;
  const media = room?.media ?? { audio: state.micOn, video: state.camOn, screen: false };
  setControl($('mic-button'), media.audio, { icon: ICONS.mic, iconOff: ICONS.micOff, label: 'Mute',
    labelOff: 'Unmute', title: 'Mute microphone (Ctrl+D)', titleOff: 'Unmute microphone (Ctrl+D)' });
  setControl($('cam-button'), media.video, { icon: ICONS.cam, iconOff: ICONS.camOff, label: 'Stop video',
    labelOff: 'Start video', title: 'Turn off camera (Ctrl+E)', titleOff: 'Turn on camera (Ctrl+E)' });
  setControl($('screen-button'), media.screen, { icon: ICONS.screen, iconOff: ICONS.screen,
    label: 'Share screen', labelOff: 'Share screen', title: 'Stop sharing your screen',
    titleOff: 'Share your screen', pressed: media.screen });
  setControl($('people-button'), state.panel === 'people', { icon: ICONS.people, iconOff: ICONS.people,
    label: 'People', labelOff: 'People', title: 'Hide participants', titleOff: 'Show participants',
    pressed: state.panel === 'people' });
  setControl($('chat-button'), state.panel === 'chat', { icon: ICONS.chat, iconOff: ICONS.chat,
    label: 'Chat', labelOff: 'Chat', title: 'Hide chat', titleOff: 'Show chat', pressed: state.panel === 'chat' });
  setControl($('captions-button'), state.captions, { icon: ICONS.captions, iconOff: ICONS.captions,
    label: 'Captions', labelOff: 'Captions', title: 'Hide captions', titleOff: 'Show captions',
    pressed: state.captions });
  $('captions-button').hidden = !(room?.features.transcription || room?.transcriptionActive);
  $('captions').hidden = !state.captions || $('captions-button').hidden;
  setControl($('transcript-button'), state.panel === 'transcript', { icon: ICONS.notes,
    iconOff: ICONS.notes, label: 'Transcript', labelOff: 'Transcript', title: 'Hide transcript',
    titleOff: 'Show live transcript', pressed: state.panel === 'transcript' });
  setControl($('leave-button'), true, { icon: ICONS.leave, label: 'Leave', title: 'Leave the meeting',
    pressed: null });
  $('chat-badge').hidden = state.unread === 0 || state.panel === 'chat';
  $('chat-badge').textContent = String(state.unread);
}

async function guarded(work) {
  try {
    await work();
  } catch (err) {
    toast(err?.message ?? String(err), { kind: 'warn' });
  }
  renderControls();
}

function openPanel(which) {
  state.panel = state.panel === which ? null : which;
  $('panel').hidden = !state.panel;
  for (const pane of ['people', 'chat', 'transcript']) {
    $(`${pane}-pane`).hidden = state.panel !== pane;
    $(`tab-${pane}`).setAttribute('aria-selected', String(state.panel === pane));
  }
  if (state.panel === 'people') people.render();
  if (state.panel === 'chat') {
    state.unread = 0;
    $('chat-input').focus();
  }
  renderControls();
}

function addChat({ from, name, text, ts, self }) {
  const item = document.createElement('li');
  item.className = `chat-message${self ? ' mine' : ''}`;
  item.dataset.from = from;
  item.innerHTML = '<div class="meta"><b></b><time></time></div><p></p>';
  item.querySelector('b').textContent = self ? 'You' : name || 'Guest';
  item.querySelector('time').textContent = formatTime(ts || Date.now());
  item.querySelector('p').textContent = text;
  $('chat-log').append(item);
  $('chat-empty').hidden = true;
  item.scrollIntoView({ block: 'end' });
  if (state.panel !== 'chat' && !self) {
    state.unread += 1;
    toast(`${name || 'Guest'}: ${text}`, { kind: 'chat' });
  }
  renderControls();
}

// What the room bar says about transcription, by the tap's `transcript-status` state: never a
// steady "Transcribing" while speech goes untranscribed.
const TRANSCRIPTION_TEXT = {
  live: 'Transcribing',
  delayed: 'Transcription is behind',
  dropping: 'Transcription is behind — some speech was not transcribed',
};

function showTranscription(status) {
  const known = status in TRANSCRIPTION_TEXT ? status : 'live';
  $('transcribing').dataset.state = known;
  $('transcribing').textContent = TRANSCRIPTION_TEXT[known];
}

// A gap in the transcript where a speaker's words were lost (one line per run of drops).
function addTranscriptGap(peerId, name) {
  const last = $('transcript-log').lastElementChild;
  if (last?.classList.contains('transcript-gap') && last.dataset.peer === peerId) return;
  const item = document.createElement('li');
  item.className = 'transcript-gap';
  item.dataset.peer = peerId ?? '';
  const who = peerId === state.room?.peerId ? 'your' : `${name || 'a guest'}’s`;
  item.textContent = `Some of ${who} speech was not transcribed.`;
  $('transcript-log').append(item);
  $('transcript-empty').hidden = true;
  item.scrollIntoView({ block: 'end' });
}

/** The live transcript over the video: the latest two lines, gone after a quiet while. */
function showCaption({ peerId, name, segmentId, text }) {
  const box = $('captions');
  const id = `${peerId}:${segmentId}`;
  let line = [...box.children].find((el) => el.dataset.segment === id);
  if (!line) {
    line = document.createElement('p');
    line.dataset.segment = id;
    line.innerHTML = '<b></b> <span></span>';
    box.append(line);
    while (box.children.length > 2) box.firstElementChild.remove();
  }
  line.querySelector('b').textContent = `${peerId === state.room?.peerId ? 'You' : name || 'Guest'}:`;
  line.querySelector('span').textContent = text;
  clearTimeout(line.fade);
  line.fade = setTimeout(() => line.remove(), 6000);
}

function addTranscript({ peerId, name, segmentId, text, final, interrupted = false }) {
  showCaption({ peerId, name, segmentId, text });
  const id = `${peerId}:${segmentId}`;
  let item = document.querySelector(`.transcript-line[data-segment="${CSS.escape(id)}"]`);
  if (!item) {
    item = document.createElement('li');
    item.className = 'transcript-line';
    item.dataset.segment = id;
    item.innerHTML = '<b></b><span></span>';
    $('transcript-log').append(item);
  }
  item.classList.toggle('interim', !final);
  item.querySelector('b').textContent = peerId === state.room?.peerId ? 'You' : name || 'Guest';
  item.querySelector('span').textContent = text;
  // The AI partner's line cut short by the person speaking over it (barge-in).
  let mark = item.querySelector('.interrupted');
  if (interrupted && !mark) {
    mark = document.createElement('em');
    mark.className = 'interrupted';
    mark.textContent = ' — interrupted';
    item.append(mark);
  } else if (!interrupted) {
    mark?.remove();
  }
  $('transcript-empty').hidden = true;
  item.scrollIntoView({ block: 'end' });
}

async function copyLink() {
  try {
    await navigator.clipboard.writeText(state.inviteLink);
    toast('Invite link copied. Send it to up to three people.', { kind: 'ok' });
  } catch {
    window.prompt('Copy this invite link:', state.inviteLink);
  }
}

function leave() {
  const room = state.room;
  if (!room) return;
  room.leave();
  state.levels?.close();
  state.session.clear();
  clearInterval(state.clock);
  stopPreview();
  state.preview = null;
  notice('left');
}

// ------------------------------------------------------------------------------ devices

const lobbyPickers = new DevicePickers($('lobby-devices'), (kind, id) => guarded(() => pickInLobby(kind, id)));
const roomPickers = new DevicePickers($('room-devices'), (kind, id) => guarded(() => pickInRoom(kind, id)));

/** The lobby: the preview's track for that kind is captured again from the chosen device. */
async function pickInLobby(kind, deviceId) {
  state.devices[kind] = deviceId;
  if (kind === 'speaker') return pickSpeaker(deviceId);
  await state.previewReady;
  const stream = state.preview;
  if (!stream) return undefined;
  const old = kind === 'audio' ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
  if (kind === 'video' && !state.camOn) return undefined; // used when the camera goes on
  const { stream: got, errors } = await captureLocalMedia({ audio: kind === 'audio' ? { deviceId: { exact: deviceId } } : false,
    video: kind === 'video', videoConstraints: { ...(config.video ?? DEFAULT_VIDEO), deviceId: { exact: deviceId } } });
  mediaBanner(errors, [kind === 'audio' ? 'microphone' : 'camera']);
  const track = got.getTracks()[0];
  if (!track) return undefined;
  if (old) {
    stream.removeTrack(old);
    old.stop();
  }
  if (kind === 'audio') track.enabled = state.micOn;
  stream.addTrack(track);
  showPreview();
  renderPreviewControls();
  return undefined;
}

/** In the room: the client swaps the track on every connection (no renegotiation). */
async function pickInRoom(kind, deviceId) {
  state.devices[kind] = deviceId;
  if (kind === 'speaker') return pickSpeaker(deviceId);
  await state.room?.switchDevice(kind, deviceId);
  return undefined;
}

/** Remote audio to the chosen output (tiles play their peer's audio). */
async function pickSpeaker(deviceId) {
  state.devices.speaker = deviceId;
  localStorage.setItem('connvo.speaker', deviceId);
  await Promise.all([...document.querySelectorAll('.tile:not(.self) video')].map((video) => routeAudio(video)));
}

function routeAudio(video) {
  const id = state.devices.speaker;
  if (!id || !video.setSinkId || video.sinkId === id) return Promise.resolve();
  return video.setSinkId(id).catch((err) => {
    // the device went away: play on the default output
    if (err?.name !== 'NotFoundError') console.warn('connvo: speaker', err);
  });
}

function openSettings() {
  const room = state.room;
  roomPickers.refresh({ ...state.devices, ...(room ? room.deviceIds : {}) });
  $('settings-dialog').showModal();
}

function setupRoomControls() {
  $('settings-button').addEventListener('click', openSettings);
  $('mic-button').addEventListener('click', () => guarded(async () => {
    await state.room.setMicEnabled(!state.room.media.audio);
    state.micOn = state.room.micEnabled;
  }));
  $('cam-button').addEventListener('click', () => guarded(async () => {
    await state.room.setCameraEnabled(!state.room.media.video);
    state.camOn = state.room.cameraEnabled;
  }));
  $('screen-button').addEventListener('click', () => guarded(async () => {
    if (state.room.screenStream) await state.room.stopScreenShare();
    else await state.room.startScreenShare();
  }));
  $('people-button').addEventListener('click', () => openPanel('people'));
  $('tab-people').addEventListener('click', () => state.panel !== 'people' && openPanel('people'));
  $('chat-button').addEventListener('click', () => openPanel('chat'));
  $('transcript-button').addEventListener('click', () => openPanel('transcript'));
  $('captions-button').addEventListener('click', () => {
    state.captions = !state.captions;
    localStorage.setItem('connvo.captions', state.captions ? 'on' : 'off');
    renderControls();
  });
  $('tab-chat').addEventListener('click', () => state.panel !== 'chat' && openPanel('chat'));
  $('tab-transcript').addEventListener('click', () => state.panel !== 'transcript' && openPanel('transcript'));
  $('panel-close').addEventListener('click', () => openPanel(state.panel));
  $('leave-button').addEventListener('click', leave);
  $('waiting-leave').addEventListener('click', leave);
  $('copy-link').addEventListener('click', copyLink);
  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('chat-input');
    guarded(async () => {
      if (state.room.sendChat(input.value)) input.value = '';
    });
  });
  document.addEventListener('keydown', (event) => {
    if (!state.room || state.room.state !== 'joined' || !(event.ctrlKey || event.metaKey)) return;
    const key = event.key.toLowerCase();
    if (key === 'd') $('mic-button').click();
    else if (key === 'e') $('cam-button').click();
    else return;
    event.preventDefault();
  });
  // Closing the tab or reloading (the page cannot tell which): the hub keeps the seat only a
  // few seconds, for a reload to resume it (see session.js); a closed tab frees it.
  window.addEventListener('pagehide', () => state.room?.closing());
}

setupLobby();
setupRoomControls();
