// session.js: what a tab remembers about the meeting it is in, for a reload. Kept in
// sessionStorage (this tab only, gone when the tab closes): the invite, the resume token of the
// seat, the name and the mic/camera choice. A reload of a page that was in the room goes
// straight back in with `join {resume}`; a page that left or was ended forgets it.

const KEY = 'connvo.session';

export class TabSession {
  /** The saved session for `invite`, or null. */
  load(invite) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
      if (saved && saved.invite === invite && saved.resumeToken && saved.name) return saved;
    } catch {
      // an unreadable entry is as good as none
    }
    return null;
  }

  save(session) {
    try {
      sessionStorage.setItem(KEY, JSON.stringify(session));
    } catch {
      // storage full or disabled: a reload then joins afresh
    }
  }

  update(fields) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
      if (saved) this.save({ ...saved, ...fields });
    } catch {
      // as above
    }
  }

  clear() {
    sessionStorage.removeItem(KEY);
  }
}
