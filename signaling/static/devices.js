// devices.js: the microphone, camera and speaker pickers of the demo page (lobby and room
// settings). Filled from enumerateDevices (labels appear once the page may use the devices);
// a speaker picker only where the browser can route audio (HTMLMediaElement.setSinkId).

const KINDS = { audioinput: 'audio', videoinput: 'video', audiooutput: 'speaker' };

export const canPickSpeaker = () => typeof HTMLMediaElement !== 'undefined'
  && 'setSinkId' in HTMLMediaElement.prototype;

export class DevicePickers {
  /** `root` holds one `<select data-kind="audioinput|videoinput|audiooutput">` per kind;
   * `onPick(kind, deviceId)` with kind `audio`, `video` or `speaker`. */
  constructor(root, onPick) {
    this.root = root;
    for (const select of root.querySelectorAll('select[data-kind]')) {
      select.addEventListener('change', () => onPick(KINDS[select.dataset.kind], select.value));
    }
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.refresh(this.current));
    this.current = {};
  }

  /** Re-list the devices; `current` is `{audio, video, speaker}` deviceIds to show selected. */
  async refresh(current = {}) {
    this.current = current;
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      // no media devices here: the pickers stay empty and hidden
    }
    for (const select of this.root.querySelectorAll('select[data-kind]')) {
      const kind = select.dataset.kind;
      const list = devices.filter((d) => d.kind === kind && d.deviceId);
      const field = select.closest('.field');
      field.hidden = list.length === 0 || (kind === 'audiooutput' && !canPickSpeaker());
      select.replaceChildren(...list.map((device, i) => {
        const option = document.createElement('option');
        option.value = device.deviceId;
        option.textContent = device.label || `${kind === 'videoinput' ? 'Camera' : 'Device'} ${i + 1}`;
        return option;
      }));
      const want = current[KINDS[kind]];
      if (want && list.some((d) => d.deviceId === want)) select.value = want;
    }
  }
}
