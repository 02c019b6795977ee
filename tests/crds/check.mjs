// Checks Kubernetes resources against the upstream CRD schemas of Istio, the Gateway API and
// Envoy Gateway, as the npm packages pinned in package.json carry them (README.md here).
//
// Input (stdin): JSON [{"label": "...", "doc": {...}}, ...]
// Output (stdout): JSON {"<label>": ["<path>: <problem>", ...], ...} (an empty list: valid)
// With --serve: one such JSON input per line, one output line each (the declarations are
// parsed once, so a test suite asking many times does not pay for it each time).
//
// Two checks per resource, both derived from the upstream schema:
//  1. the package's compiled JSON Schema validator (types, enums, required fields,
//     patterns, bounds), as the Kubernetes API server's OpenAPI validation would run it;
//  2. the package's TypeScript declarations, by the TypeScript compiler: the resource is
//     written as an object literal of the declared type, so a field the schema does not
//     declare is an error, as `kubectl apply` (strict field validation, the default since
//     Kubernetes 1.27) refuses it; wrong types and missing required fields fail here too.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// API group → npm package holding its models.
const PACKAGES = [
  [/\.istio\.io$/, "@kubernetes-models/istio"],
  [/^gateway\.networking\.k8s\.io$/, "@kubernetes-models/gateway-api"],
  [/^gateway\.envoyproxy\.io$/, "@kubernetes-models/envoy-gateway"],
];

function modelModule(doc) {
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) return { error: "a document must be a mapping" };
  const { apiVersion, kind } = doc;
  if (typeof apiVersion !== "string" || !apiVersion.includes("/") || typeof kind !== "string") {
    return { error: "apiVersion (group/version) and kind are required" };
  }
  const [group, version] = apiVersion.split("/");
  const pkg = PACKAGES.find(([re]) => re.test(group))?.[1];
  if (!pkg) return { error: `apiVersion ${apiVersion}: no upstream schema for this API group` };
  const spec = `${pkg}/${group}/${version}/${kind}`;
  try {
    require.resolve(join(HERE, "node_modules", pkg, group, version, `${kind}.js`));
  } catch {
    return { error: `${apiVersion} ${kind}: the upstream schemas have no such kind` };
  }
  return { spec, kind };
}

// --- 1. the compiled JSON Schema validator -----------------------------------------------

async function schemaProblems(doc, mod) {
  const models = await import(mod.spec);
  const Model = models[mod.kind];
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    // ajv's errors: "data/spec/url must be string" (several joined with ", ").
    const errors = e.errors ?? [{ instancePath: "", message: String(e.message) }];
    return errors.map((err) => {
      const path = err.instancePath.split("/").filter(Boolean).map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`)).join("").replace(/^\./, "");
      let message = err.message;
      if (err.keyword === "enum") message += ` (${err.params.allowedValues.join(", ")})`;
      if (err.keyword === "required") return `${path || "(document)"}: required field ${err.params.missingProperty} is missing`;
      return `${path || "(document)"}: ${message}`;
    });
  }
}

// --- 2. the TypeScript declarations ------------------------------------------------------

// Writes `value` as a TypeScript literal, recording where each JSON path's value starts and ends.
function literal(value, path, spans, out) {
  const start = out.length;
  if (Array.isArray(value)) {
    out.push("[\n");
    value.forEach((v, i) => {
      literal(v, `${path}[${i}]`, spans, out);
      out.push(",\n");
    });
    out.push("]");
  } else if (value && typeof value === "object") {
    out.push("{\n");
    for (const [k, v] of Object.entries(value)) {
      const keyPath = path ? `${path}.${k}` : k;
      const keyStart = out.length;
      out.push(`${JSON.stringify(k)}: `);
      spans.push({ path: keyPath, start: keyStart, key: true });
      literal(v, keyPath, spans, out);
      out.push(",\n");
    }
    out.push("}");
  } else {
    out.push(JSON.stringify(value));
  }
  spans.push({ path: path || "(document)", start, end: out.length });
}

// The packages' declarations, parsed once per process.
const LIBRARY = new Map();

const COMPILER_OPTIONS = {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  skipLibCheck: true,
  types: [],
};

function typeProblems(items) {
  // One virtual file per resource, one program for all of them.
  const files = new Map();
  items.forEach((item, n) => {
    const chunks = [];
    const spans = [];
    const header = `import type { I${item.mod.kind} as T } from ${JSON.stringify(item.mod.spec)};\nexport const resource: T = `;
    chunks.push(header);
    literal(item.doc, "", spans, chunks);
    chunks.push(";\n");
    // chunk index → character offset
    const offsets = [];
    let pos = 0;
    for (const c of chunks) {
      offsets.push(pos);
      pos += c.length;
    }
    const text = chunks.join("");
    const at = (chunk) => (chunk < offsets.length ? offsets[chunk] : text.length);
    files.set(join(HERE, `__resource${n}.mts`), {
      item,
      text,
      spans: spans.map((s) => ({ ...s, start: at(s.start), end: s.end === undefined ? undefined : at(s.end) })),
    });
  });
  const host = ts.createCompilerHost(COMPILER_OPTIONS);
  const readFile = host.readFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.readFile = (f) => files.get(f)?.text ?? readFile(f);
  host.fileExists = (f) => files.has(f) || fileExists(f);
  host.getSourceFile = (f, lang, ...rest) => {
    if (files.has(f)) return ts.createSourceFile(f, files.get(f).text, lang);
    if (!LIBRARY.has(f)) LIBRARY.set(f, getSourceFile(f, lang, ...rest));
    return LIBRARY.get(f);
  };
  const program = ts.createProgram([...files.keys()], COMPILER_OPTIONS, host);
  const out = new Map();
  for (const [name, file] of files) {
    const problems = [];
    for (const d of ts.getPreEmitDiagnostics(program, program.getSourceFile(name))) {
      const start = d.start ?? 0;
      // The innermost value (or key) that holds the error.
      let where = "(document)";
      let best = Infinity;
      for (const s of file.spans) {
        const end = s.key ? s.start + 1 : s.end;
        if (s.key ? start === s.start || start === s.start + 1 : start >= s.start && start < end) {
          const size = s.key ? 0 : end - s.start;
          if (size < best) {
            best = size;
            where = s.path;
          }
        }
      }
      let message = ts.flattenDiagnosticMessageText(d.messageText, " ");
      const unknown = /^Object literal may only specify known properties, and '"?(.+?)"?' does not exist in type/.exec(message);
      if (unknown) message = `unknown field ${unknown[1]} (the upstream schema has no such field)`;
      problems.push(`${where}: ${message.replace(/IComGithubEnvoyproxyGatewayApiV1alpha1|IIoK8sSigsGatewayApiApisV1|IIoK8sApimachineryPkgApisMetaV1/g, "")}`);
    }
    out.set(file.item.label, problems);
  }
  return out;
}

// -----------------------------------------------------------------------------------------

async function check(input) {
  const result = {};
  const typed = [];
  for (const { label, doc } of input) {
    const mod = modelModule(doc);
    if (mod.error) {
      result[label] = [`(document): ${mod.error}`];
      continue;
    }
    result[label] = await schemaProblems(doc, mod);
    typed.push({ label, doc, mod });
  }
  for (const [label, problems] of typeProblems(typed)) {
    // The same fault is often seen by both checks in different words: keep both, a reader
    // gets the schema's wording and TypeScript's exact field name.
    result[label].push(...problems);
  }
  return result;
}

if (process.argv.includes("--serve")) {
  const { createInterface } = await import("node:readline");
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) process.stdout.write(JSON.stringify(await check(JSON.parse(line))) + "\n");
  }
} else {
  process.stdout.write(JSON.stringify(await check(JSON.parse(readFileSync(0, "utf8")))));
}
