/*
 * cnbi-spawner inside the learner's JupyterLab (policy first):
 *
 * - A guest (temporary session) sees a small, dismissible notice: the session is temporary,
 *   when it is removed (after the idle timeout, at the latest at started + maximum age), and
 *   a "Download my work" link (a zip of the files created or changed since the session
 *   started). Dismissed, it stays away for this browser tab.
 * - Anyone (guest or named user) whose server the culler will stop for being idle sees a
 *   warning `warn_lead` seconds before the deadline, with a countdown and "Keep working",
 *   which reports activity to the hub (the culler reads it) and hides the warning. Guests
 *   are told their files are deleted; named users only that the server stops.
 *
 * Every number comes from the learner server's `cnbi-learner/session` endpoint (the server
 * extension cnbi_learner_lab, which asks the hub: the culler's own deadline rule); this file
 * computes no deadline, it only renders them. It polls that endpoint (with
 * no_track_activity, so the poll itself is not activity for the Jupyter server).
 *
 * The learner's input (keys, pointer, wheel, touch) is the activity that counts: reported to
 * `cnbi-learner/activity` at most every ACTIVITY_EVERY ms, and while the warning shows it
 * presses "Keep working" (the culler may be due before the next activity report).
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

const SETTINGS = ServerConnection.makeSettings();
const API = URLExt.join(SETTINGS.baseUrl, 'cnbi-learner');
const DISMISSED = 'cnbi-learner-notice-dismissed';
const ACTIVITY_EVERY = 30000;
const INPUT_EVENTS = ['keydown', 'pointerdown', 'wheel', 'touchstart'];

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600 && s % 3600 === 0) return s / 3600 === 1 ? '1 hour' : `${s / 3600} hours`;
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  if (s >= 60 && s % 60 === 0) return s / 60 === 1 ? '1 minute' : `${s / 60} minutes`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return s === 1 ? '1 second' : `${s} seconds`;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function countdown(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}

async function call(path, method) {
  const url = URLExt.join(API, path) + '?no_track_activity=1';
  const response = await ServerConnection.makeRequest(url, { method }, SETTINGS);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.status === 204 ? null : response.json();
}

function downloadLink(session) {
  return el(
    'a',
    {
      id: 'cnbi-download',
      class: 'cnbi-learner-button',
      href: URLExt.join(API, 'download'),
      download: session.download_name
    },
    'Download my work'
  );
}

function noticeText(session) {
  const parts = ['This is a temporary session: your files are deleted when it ends'];
  const when = [];
  if (session.idle_timeout) when.push(`after ${duration(session.idle_timeout)} without activity`);
  if (session.max_age_at) {
    const end = new Date(Date.parse(session.max_age_at));
    when.push(`at the latest at ${clock(end)} (${duration(session.max_age)} after it started)`);
  }
  if (when.length) parts.push(` — ${when.join(', and ')}`);
  return parts.join('') + '.';
}

function showNotice(session) {
  if (!session.notice || !session.temporary || sessionStorage.getItem(DISMISSED)) return;
  const notice = el(
    'div',
    { id: 'cnbi-notice', class: 'cnbi-learner-box', role: 'status' },
    el('span', { id: 'cnbi-notice-text' }, noticeText(session))
  );
  if (session.download) notice.append(downloadLink(session));
  notice.append(
    el(
      'button',
      {
        id: 'cnbi-notice-dismiss',
        class: 'cnbi-learner-button',
        title: 'Hide this notice',
        onclick: () => {
          sessionStorage.setItem(DISMISSED, '1');
          notice.remove();
        }
      },
      'Dismiss'
    )
  );
  document.body.append(notice);
}

class Warning {
  constructor() {
    this.node = null;
    this.timer = null;
  }

  /** Show, update or hide the warning for this session answer. */
  update(session, receivedAt) {
    const now = Date.parse(session.now);
    if (!session.deadline || !session.warn_at || now < Date.parse(session.warn_at)) {
      this.hide();
      return;
    }
    const left = (Date.parse(session.deadline) - now) / 1000;
    const deadlineLocal = receivedAt + left * 1000;
    if (!this.node) this.node = this.build(session);
    const text = this.node.querySelector('#cnbi-warning-text');
    const render = () => {
      const seconds = (deadlineLocal - Date.now()) / 1000;
      text.textContent = this.message(session, seconds);
    };
    render();
    clearInterval(this.timer);
    this.timer = setInterval(render, 1000);
  }

  message(session, seconds) {
    const what = session.temporary
      ? 'This session ends, and your files are deleted,'
      : 'Your server will be stopped';
    if (session.reason === 'max-age') {
      return `${what} in ${countdown(seconds)}: it has reached its maximum length.`;
    }
    return `${what} in ${countdown(seconds)} because it has been idle.`;
  }

  build(session) {
    const node = el(
      'div',
      { id: 'cnbi-warning', class: 'cnbi-learner-box cnbi-learner-warning', role: 'alert' },
      el('span', { id: 'cnbi-warning-text' })
    );
    if (session.reason === 'idle') {
      node.append(
        el(
          'button',
          {
            id: 'cnbi-keep-working',
            class: 'cnbi-learner-button cnbi-learner-primary',
            onclick: () => this.keepWorking()
          },
          'Keep working'
        )
      );
    }
    if (session.temporary && session.download) node.append(downloadLink(session));
    document.body.append(node);
    return node;
  }

  get shown() {
    return this.node !== null && this.node.querySelector('#cnbi-keep-working') !== null;
  }

  async keepWorking() {
    const receivedAt = Date.now();
    const session = await call('keep-working', 'POST');
    this.hide();
    this.update(session, receivedAt);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.node) this.node.remove();
    this.node = null;
  }
}

/** Report the learner's input as activity (throttled); during the warning, keep working. */
function watchInput(warning) {
  let last = 0;
  const onInput = event => {
    if (warning.node && warning.node.contains(event.target)) return; // its own buttons
    const now = Date.now();
    if (warning.shown) {
      last = now;
      warning.keepWorking().catch(error => console.warn('cnbi-learner-lab:', error));
      return;
    }
    if (now - last < ACTIVITY_EVERY) return;
    last = now;
    call('activity', 'POST').catch(error => console.warn('cnbi-learner-lab:', error));
  };
  for (const name of INPUT_EVENTS) {
    document.addEventListener(name, onInput, { capture: true, passive: true });
  }
}

async function run() {
  const warning = new Warning();
  watchInput(warning);
  let first = true;
  for (;;) {
    let wait = 30;
    try {
      const receivedAt = Date.now();
      const session = await call('session', 'GET');
      if (first) showNotice(session);
      first = false;
      warning.update(session, receivedAt);
      wait = session.poll_seconds || wait;
    } catch (error) {
      console.warn('cnbi-learner-lab:', error);
    }
    await new Promise(resolve => setTimeout(resolve, wait * 1000));
  }
}

const plugin = {
  id: 'cnbi-learner-lab:plugin',
  description: 'Temporary-session notice, Download my work, and the warning before a cull.',
  autoStart: true,
  activate: app => {
    if (!PageConfig.getOption('hubPrefix')) return; // not a JupyterHub server
    app.restored.then(run);
  }
};

export default plugin;
