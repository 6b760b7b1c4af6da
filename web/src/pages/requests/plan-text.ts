/**
 * An EXPLAIN (FORMAT JSON) plan as the indented text psql shows: one line per node (its type,
 * relation, index, estimates), its conditions under it. Anything else is shown as it came.
 */
type PlanNode = Record<string, unknown> & { Plans?: PlanNode[] };

const CONDITIONS = [
  'Index Cond',
  'Recheck Cond',
  'Hash Cond',
  'Merge Cond',
  'Join Filter',
  'Filter',
  'Sort Key',
];
const MAX_DEPTH = 64;

function nodeLines(node: PlanNode, depth: number, out: string[]): void {
  if (depth > MAX_DEPTH) return;
  const pad = depth === 0 ? '' : `${'      '.repeat(depth - 1)}  ->  `;
  const under = depth === 0 ? '  ' : `${'      '.repeat(depth)}  `;
  // psql names a ModifyTable node by its operation (Insert, Update, Delete, Merge).
  let head = String(
    node['Node Type'] === 'ModifyTable' && node.Operation ? node.Operation : (node['Node Type'] ?? '?'),
  );
  if (node['Join Type'] && head.includes('Join')) head = `${node['Join Type']} ${head}`;
  if (node['Index Name']) head += ` using ${node['Index Name']}`;
  if (node['Relation Name']) {
    head += ` on ${node['Relation Name']}`;
    if (node.Alias && node.Alias !== node['Relation Name']) head += ` ${node.Alias}`;
  }
  const [from, to] = [node['Startup Cost'], node['Total Cost']];
  const cost =
    typeof from === 'number' && typeof to === 'number' ? `cost=${from.toFixed(2)}..${to.toFixed(2)} ` : '';
  out.push(`${pad}${head}  (${cost}rows=${node['Plan Rows'] ?? '?'} width=${node['Plan Width'] ?? '?'})`);
  for (const c of CONDITIONS) {
    const v = node[c];
    if (v !== undefined) out.push(`${under}${c}: ${Array.isArray(v) ? v.join(', ') : String(v)}`);
  }
  for (const child of node.Plans ?? []) nodeLines(child, depth + 1, out);
}

export function planText(plan: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(plan);
  } catch {
    return plan;
  }
  const root = (Array.isArray(parsed) ? parsed[0] : parsed) as { Plan?: PlanNode } | undefined;
  if (!root || typeof root !== 'object' || !root.Plan || typeof root.Plan !== 'object') return plan;
  const out: string[] = [];
  nodeLines(root.Plan, 0, out);
  return out.join('\n');
}
