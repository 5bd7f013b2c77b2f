// people.js: the participant list of the demo room (the "People" pane): everyone with their
// role and microphone state; for the host, per person "Ask to mute" and "Remove", and "End
// meeting for everyone". Removing and ending ask once more in place (no browser dialog).

const ROLE_NAMES = { host: 'Host', participant: 'Participant', observer: 'Viewer', agent: 'AI partner' };

export class PeoplePanel {
  /**
   * @param {object} options
   * @param {HTMLElement} options.list   the <ul> to fill
   * @param {HTMLElement} options.footer where the host's "End meeting for everyone" goes
   * @param {() => import('./connvo.js').Room | null} options.room
   * @param {() => string} options.selfName
   * @param {(name: string) => string} options.initials
   * @param {(text: string, opts?: object) => void} options.toast
   * @param {() => void} options.onEnd   the host confirmed ending the meeting
   */
  constructor({ list, footer, room, selfName, initials, toast, onEnd }) {
    Object.assign(this, { list, footer, room, selfName, initials, toast, onEnd });
    this.confirming = null; // peerId being removed, or 'end'
  }

  render() {
    const room = this.room();
    if (!room?.peerId) return;
    const isHost = room.role === 'host';
    const people = [
      { peerId: room.peerId, name: this.selfName(), role: room.role, audio: room.media.audio, self: true },
      ...[...room.peers.values()].map((peer) => ({ peerId: peer.peerId, name: peer.name || 'Guest',
        role: peer.role, audio: peer.media.audio || peer.isAgent, self: false })),
    ];
    this.list.replaceChildren(...people.map((person) => this.#item(person, isHost)));
    this.#footer(isHost);
  }

  #item(person, isHost) {
    const li = document.createElement('li');
    li.className = 'person';
    li.dataset.peerId = person.peerId;
    li.innerHTML = `<span class="person-avatar" aria-hidden="true"></span>
      <span class="person-text"><span class="person-name"></span><span class="person-role"></span></span>
      <span class="person-mic"></span><span class="person-actions"></span>`;
    li.querySelector('.person-avatar').textContent = this.initials(person.name);
    li.querySelector('.person-name').textContent = person.self ? `${person.name} (you)` : person.name;
    li.querySelector('.person-role').textContent = ROLE_NAMES[person.role] ?? person.role;
    const mic = li.querySelector('.person-mic');
    mic.textContent = person.audio ? 'Mic on' : 'Muted';
    mic.dataset.on = String(person.audio);
    const actions = li.querySelector('.person-actions');
    // The AI partner is the meeting's own: nobody mutes or removes it (end the meeting).
    if (!isHost || person.self || person.role === 'agent') return li;
    if (this.confirming === person.peerId) {
      actions.append(
        this.#button(`Remove ${person.name}`, 'Remove', 'danger', () => {
          this.confirming = null;
          this.room()?.kick(person.peerId);
          this.toast(`${person.name} was removed from the meeting.`, { kind: 'ok' });
          this.render();
        }),
        this.#button(`Cancel removing ${person.name}`, 'Cancel', 'ghost', () => {
          this.confirming = null;
          this.render();
        }),
      );
      return li;
    }
    if (person.audio) {
      actions.append(this.#button(`Ask to mute ${person.name}`, 'Ask to mute', 'ghost', () => {
        if (this.room()?.askMute(person.peerId)) this.toast(`Asked ${person.name} to mute.`, { kind: 'ok' });
      }));
    }
    actions.append(this.#button(`Remove ${person.name} from the meeting`, 'Remove', 'ghost', () => {
      this.confirming = person.peerId;
      this.render();
      this.list.querySelector(`[data-peer-id="${CSS.escape(person.peerId)}"] .button`)?.focus();
    }));
    return li;
  }

  #footer(isHost) {
    this.footer.hidden = !isHost;
    if (!isHost) return;
    if (this.confirming === 'end') {
      const text = document.createElement('p');
      text.className = 'confirm-text';
      text.textContent = 'End the meeting for everyone? Everyone will leave the call.';
      this.footer.replaceChildren(text,
        this.#button('End meeting for everyone', 'End meeting for everyone', 'danger', () => {
          this.confirming = null;
          this.onEnd();
        }),
        this.#button('Cancel ending the meeting', 'Cancel', 'ghost', () => {
          this.confirming = null;
          this.render();
        }));
      this.footer.querySelector('.danger')?.focus();
      return;
    }
    this.footer.replaceChildren(this.#button('End meeting for everyone', 'End meeting for everyone',
      'danger-ghost', () => {
        this.confirming = 'end';
        this.render();
      }));
  }

  #button(ariaLabel, text, kind, onClick) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `button small ${kind}`;
    button.textContent = text;
    if (ariaLabel !== text) button.setAttribute('aria-label', ariaLabel);
    button.addEventListener('click', onClick);
    return button;
  }
}
