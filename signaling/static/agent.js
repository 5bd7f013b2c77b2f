// agent.js: the demo's meetings with an AI partner. "Practise with an AI partner" in the lobby
// creates a meeting from the deployment's default scenario (createMeetingFromScenario: the room
// starts at once and the hub sends the scenario's persona into it), and the room shows the
// persona: its tile says "AI" and its name, a placeholder says "<name> is joining…" until it is
// in, and its lines come into the transcript pane (which opens by itself in such a meeting).

/** The scenario the button starts when the deployment has it (else the first listed). */
export const DEFAULT_SCENARIO = 'interview-practice';

/** The meeting's AI persona ({scenarioId, name, ...} from `joined.features.agent`), or null. */
export function agentOf(room) {
  return room?.features?.agent ?? null;
}

/** The scenario to practise: the default one, else the first the deployment lists; null when
 * it provides none. */
export function pickScenario(scenarios) {
  return scenarios.find((s) => s.scenarioId === DEFAULT_SCENARIO) ?? scenarios[0] ?? null;
}

/** Create the practice meeting for `name` (signed in already); returns
 * `{scenario, meeting}` where `meeting` is createMeetingFromScenario's answer (`roomToken`,
 * `wsUrl`, `roomUrl`, `agent`, ...), or throws a ConnvoError (`no-scenarios` when the
 * deployment has none). */
export async function createPractice(api, name, ConnvoError) {
  const { scenarios } = await api.listScenarios();
  const scenario = pickScenario(scenarios ?? []);
  if (!scenario) {
    throw new ConnvoError('no-scenarios', 'This server has no practice scenarios set up.');
  }
  const meeting = await api.createMeetingFromScenario({ scenarioId: scenario.scenarioId, name });
  return { scenario, meeting };
}

/** Mark a tile as the AI persona's: an "AI" badge beside its name. */
export function markAgentTile(tile) {
  tile.classList.add('agent-tile');
  if (tile.querySelector('.ai-badge')) return;
  const badge = document.createElement('span');
  badge.className = 'ai-badge';
  badge.textContent = 'AI';
  badge.title = 'AI partner: a computer voice, not a person';
  tile.querySelector('.nametag').insertBefore(badge, tile.querySelector('.name'));
}

/** While the meeting's persona has no seat yet (or lost it): a placeholder tile saying
 * "<name> is joining…"; removed once it is in. `tiles` is the tile grid. */
export function renderAgentPlaceholder(tiles, room, { initials, paint }) {
  const agent = agentOf(room);
  const present = agent && [...room.peers.values()].some((peer) => peer.isAgent);
  let placeholder = tiles.querySelector('.agent-pending');
  if (!agent || present) {
    placeholder?.remove();
    return;
  }
  if (placeholder) return;
  placeholder = document.createElement('div');
  placeholder.className = 'tile agent-tile agent-pending';
  placeholder.dataset.video = 'off';
  placeholder.dataset.state = 'connecting';
  placeholder.setAttribute('role', 'group');
  placeholder.setAttribute('aria-label', `${agent.name}, AI partner, joining`);
  placeholder.innerHTML = `
    <div class="avatar" aria-hidden="true"><span></span></div>
    <div class="tile-status" role="status"></div>
    <div class="nametag"><span class="ai-badge" title="AI partner: a computer voice, not a person">AI</span><span class="name"></span></div>`;
  placeholder.querySelector('.name').textContent = agent.name;
  placeholder.querySelector('.tile-status').textContent = `${agent.name} is joining…`;
  paint(placeholder.querySelector('.avatar'), agent.name, initials);
  tiles.append(placeholder);
}
