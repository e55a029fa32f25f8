// The web terminal: one xterm.js terminal per tab, wired to kbastion over
// one WebSocket (binary frames; the message types are in src/web/wire.rs).
// The exec starts after the first resize message, so the first prompt is
// drawn at this tab's size. Output is acknowledged once xterm has drawn
// it, and kbastion sends no more than a window ahead of that: a tab that
// cannot keep up stalls the command. A dropped socket is reopened and the
// same process reattached (its id is kept in sessionStorage, which
// survives a reload of this tab); output is resumed from the last byte
// this page received. Input is sent only within the credit kbastion
// grants as the process takes it (what exceeds it waits here, in order),
// so kbastion never stops reading this socket for a process that reads
// late.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { Unicode11Addon } from '@xterm/addon-unicode11';
import { WebglAddon } from '@xterm/addon-webgl';
import '@xterm/xterm/css/xterm.css';

// Client to kbastion.
const INPUT = 0, RESIZE = 1, ACK = 2, KEEPALIVE = 3;
// kbastion to client.
const OUTPUT = 0, EXIT = 1, MESSAGE = 2, ATTACHED = 3, PING = 4, CREDIT = 5;
// Input goes in messages of at most this much (kbastion takes 64 KiB).
const INPUT_MESSAGE = 32 * 1024;
// Acknowledge drawn output in steps of this much (kbastion's window is
// larger, so it never waits for an acknowledgement that is not coming).
// The close code kbastion sends a page whose terminal another page took.
const TAKEN_OVER = 4001;
const ACK_STEP = 64 * 1024;
const KEEPALIVE_MS = 20000;

const target = decodeURIComponent(location.pathname.replace(/^\/t\//, ''));
const storageKey = 'kbastion:' + target;
const status = document.getElementById('status');
document.title = target + ' - kbastion';

const term = new Terminal({
  allowProposedApi: true, // the unicode11 addon's width tables
  cursorBlink: true,
  scrollback: 5000,
  fontFamily: 'DejaVu Sans Mono, Menlo, Consolas, monospace',
});
const fit = new FitAddon();
term.loadAddon(fit);
term.loadAddon(new WebLinksAddon());
term.loadAddon(new Unicode11Addon());
term.unicode.activeVersion = '11';
term.open(document.getElementById('terminal'));
try {
  const webgl = new WebglAddon();
  webgl.onContextLoss(() => webgl.dispose());
  term.loadAddon(webgl);
  document.body.dataset.renderer = 'webgl';
} catch (e) {
  // No WebGL here: xterm's DOM renderer stays.
  document.body.dataset.renderer = 'dom';
}
fit.fit();
window.kbastionTerminal = term; // for tests and the browser console

// Copy on select; paste with Ctrl+Shift+V / Cmd+V goes through xterm's own
// paste handling (bracketed paste), Ctrl+Shift+C copies.
term.onSelectionChange(() => {
  const text = term.getSelection();
  if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
});
term.attachCustomKeyEventHandler((event) => {
  if (event.type === 'keydown' && event.ctrlKey && event.shiftKey && event.code === 'KeyC') {
    const text = term.getSelection();
    if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    return false;
  }
  return true;
});

let socket = null;
let received = 0; // offset after the last output byte this page got
let drawn = 0; // offset after the last byte xterm has drawn
let acked = 0;
let ended = false;
let retry = 0;
let pingSecs = 30; // kbastion's ping interval, from its ATTACHED message
let heard = Date.now(); // when the socket last brought anything
let credit = 0; // input bytes kbastion lets this socket send now
const pending = []; // input waiting for credit, oldest first
const encoder = new TextEncoder();

function sendInput(bytes) {
  if (bytes.length) pending.push(bytes);
  while (pending.length && credit > 0 && socket && socket.readyState === WebSocket.OPEN) {
    const first = pending[0];
    const n = Math.min(first.length, credit, INPUT_MESSAGE);
    if (n < first.length) pending[0] = first.subarray(n);
    else pending.shift();
    credit -= n;
    send(INPUT, first.subarray(0, n));
  }
}

function send(type, payload) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const frame = new Uint8Array(1 + payload.length);
  frame[0] = type;
  frame.set(payload, 1);
  socket.send(frame);
}

function sendResize() {
  const payload = new Uint8Array(4);
  const view = new DataView(payload.buffer);
  view.setUint16(0, term.cols);
  view.setUint16(2, term.rows);
  send(RESIZE, payload);
}

function sendAck() {
  const payload = new Uint8Array(8);
  new DataView(payload.buffer).setBigUint64(0, BigInt(drawn));
  send(ACK, payload);
  acked = drawn;
}

function show(line) {
  status.textContent = line;
  status.hidden = !line;
}

function connect() {
  const saved = JSON.parse(sessionStorage.getItem(storageKey) || 'null');
  const query = new URLSearchParams();
  if (saved && saved.id) {
    query.set('attach', saved.id);
    // A reloaded page has drawn nothing yet: the whole ring is replayed.
    query.set('offset', String(received));
  }
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
    '/ws/' + encodeURI(target) + (query.toString() ? '?' + query : '');
  socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => {
    credit = 0; // granted anew on each socket
    retry = 0;
    heard = Date.now();
    show('');
    sendResize();
  };
  socket.onmessage = (event) => {
    heard = Date.now();
    const frame = new Uint8Array(event.data);
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    switch (frame[0]) {
      case OUTPUT: {
        const offset = Number(view.getBigUint64(1));
        const data = frame.subarray(9);
        if (offset > received) {
          // Older output is gone from kbastion's ring: start clean.
          term.reset();
        }
        received = offset + data.length;
        const end = received;
        term.write(data, () => {
          drawn = end;
          if (drawn - acked >= ACK_STEP) sendAck();
          else setTimeout(() => { if (drawn > acked) sendAck(); }, 50);
        });
        break;
      }
      case EXIT: {
        const code = view.getUint32(1);
        ended = true;
        sessionStorage.removeItem(storageKey);
        term.write('\r\n[process exited with status ' + code + ']\r\n');
        document.body.dataset.exit = String(code);
        break;
      }
      case MESSAGE: {
        const line = new TextDecoder().decode(frame.subarray(1));
        term.write('\r\n' + line.replace(/\n/g, '\r\n') + '\r\n');
        break;
      }
      case ATTACHED: {
        pingSecs = view.getUint16(1);
        const id = new TextDecoder().decode(frame.subarray(3));
        sessionStorage.setItem(storageKey, JSON.stringify({ id }));
        document.body.dataset.session = id;
        break;
      }
      case PING:
        send(KEEPALIVE, new Uint8Array(0));
        break;
      case CREDIT:
        credit += view.getUint32(1);
        sendInput(new Uint8Array(0));
        break;
    }
  };
  socket.onclose = (event) => {
    socket = null;
    if (ended) return;
    if (event.code === 1000 || event.code === 1003 || event.code === 1007 ||
        event.code === 1008 || event.code === 1009 || event.code === TAKEN_OVER) {
      // Closed on purpose by kbastion: the reason is the one line to show.
      ended = true;
      sessionStorage.removeItem(storageKey);
      if (event.reason) term.write('\r\n' + event.reason + '\r\n');
      document.body.dataset.closed = event.reason || String(event.code);
      return;
    }
    reconnect();
  };
}

// One socket at a time: a second one would take the terminal over from
// the first (kbastion closes the older with TAKEN_OVER).
let retryTimer = null;
function reconnect() {
  if (retryTimer !== null || ended) return;
  retry += 1;
  show('connection lost; reconnecting…');
  retryTimer = setTimeout(() => {
    retryTimer = null;
    if (!socket) connect();
  }, Math.min(5000, 250 * retry));
}

term.onData((data) => sendInput(encoder.encode(data)));
term.onBinary((data) => sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
term.onResize(() => sendResize());
new ResizeObserver(() => fit.fit()).observe(document.getElementById('terminal'));
window.addEventListener('online', () => {
  if (retryTimer !== null) {
    clearTimeout(retryTimer);
    retryTimer = null;
  }
  if (!socket && !ended) connect();
});
// A network that drops packets (a blip, a sleeping laptop, DevTools
// offline) closes no socket: one that has brought nothing, not even a
// ping, for three ping intervals is given up and a new one attached.
setInterval(() => {
  if (!socket || socket.readyState !== WebSocket.OPEN || ended) return;
  if (Date.now() - heard > 3 * pingSecs * 1000) {
    const dead = socket;
    dead.onclose = dead.onmessage = null;
    dead.close();
    socket = null;
    reconnect();
  }
}, 1000);
setInterval(() => send(KEEPALIVE, new Uint8Array(0)), KEEPALIVE_MS);
// Files: a download streams the target's file through kbastion
// (GET /files/TARGET?path=P), an upload sends one (PUT, the body is the
// file); both show their progress and kbastion's one-line answer here.
const filePath = document.getElementById('file-path');
const transfer = document.getElementById('transfer');
const filesUrl = (path) => '/files/' + encodeURI(target) + '?path=' + encodeURIComponent(path);

function say(line) {
  transfer.textContent = line;
}

function percent(done, total) {
  return total ? Math.floor((100 * done) / total) + '%' : done + ' bytes';
}

async function download(path) {
  say('downloading ' + path + '…');
  const response = await fetch(filesUrl(path));
  if (!response.ok) {
    say((await response.text()).trim());
    return;
  }
  const total = Number(response.headers.get('content-length')) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let done = 0;
  for (;;) {
    let next;
    try {
      next = await reader.read();
    } catch (e) {
      say('the download of ' + path + ' was cut short');
      return;
    }
    if (next.done) break;
    chunks.push(next.value);
    done += next.value.length;
    say('downloading ' + path + ': ' + percent(done, total));
  }
  if (done !== total) {
    say('the download of ' + path + ' was cut short (' + done + ' of ' + total + ' bytes)');
    return;
  }
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob(chunks));
  link.download = path.replace(/\/+$/, '').split('/').pop() || 'download';
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  say('downloaded ' + path + ' (' + done + ' bytes)');
}

function uploadOne(file, path) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open('PUT', filesUrl(path));
    request.upload.onprogress = (event) => say('uploading ' + path + ': ' + percent(event.loaded, file.size));
    request.onload = () => resolve(request.status === 200 ? null : request.responseText.trim());
    request.onerror = () => resolve('the upload of ' + path + ' was cut short');
    request.send(file);
  });
}

async function upload(files) {
  const field = filePath.value.trim();
  for (const file of files) {
    const path = field.endsWith('/') ? field + file.name
      : files.length === 1 ? field : field + '/' + file.name;
    const failed = await uploadOne(file, path);
    if (failed) {
      say(failed);
      return;
    }
    say('uploaded ' + file.size + ' bytes to ' + path);
  }
}

document.getElementById('files').addEventListener('submit', (event) => {
  event.preventDefault();
  download(filePath.value.trim());
});
const picker = document.getElementById('upload-input');
document.getElementById('upload').addEventListener('click', () => picker.click());
picker.addEventListener('change', () => {
  upload([...picker.files]);
  picker.value = '';
});
document.addEventListener('dragover', (event) => {
  event.preventDefault();
  document.body.classList.add('dropping');
});
document.addEventListener('dragleave', () => document.body.classList.remove('dropping'));
document.addEventListener('drop', (event) => {
  event.preventDefault();
  document.body.classList.remove('dropping');
  if (event.dataTransfer && event.dataTransfer.files.length) upload([...event.dataTransfer.files]);
});

term.focus();
connect();
