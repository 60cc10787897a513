/**
 * Hot reload (SIGHUP and `POST /v1/admin/reload`, see WorkerApp.reload in app.ts): picks up new, changed
 * and removed model folders without a restart. Only folders whose fingerprint changed (models.ts
 * `folderFingerprint`) load again; a changed model's new version serves new requests while the requests in
 * flight finish on the old one, whose sessions are released after its last request; a new version that
 * fails leaves the old one serving (its listing says `reload_error`); a removed folder's model takes no new
 * requests. Reloads run one at a time.
 */
import { join } from "node:path";
import { WorkerError } from "./errors.ts";
import type { GraphKind } from "./manifest.ts";
import { folderFingerprint, loadModelFolder, modelFolders } from "./models.ts";
import type { ServedModel } from "./served.ts";
import type { WorkerState } from "./serving.ts";

/** What a reload did, by model (folder) name. */
export interface ReloadReport {
  added: string[];
  changed: string[];
  removed: string[];
  unchanged: string[];
  /** Folders that failed to load; `serving` says when the model's previous version still serves. */
  failed: { name: string; error: string; serving?: "previous version" }[];
  ms: number;
}

/** The worker's reload: each call runs after the previous one has finished. */
export function createReload(s: WorkerState): () => Promise<ReloadReport> {
  const {
    config,
    modelsDir,
    log,
    scheduler,
    inference,
    models,
    registry,
    providers,
    loading,
    reloadErrors,
    cap,
  } = s;

  /** Releases a model version's sessions once no request uses it any more. */
  const retire = (m: ServedModel) => {
    const key = m.key ?? m.info.manifest.name;
    void scheduler.whenIdle(m).then(() => inference.unload?.([key])).then(
      () =>
        log(`model ${m.info.manifest.name}: released ${key === m.info.manifest.name ? "its" : key} sessions`),
      (e) => log(`model ${m.info.manifest.name}: releasing ${key}: ${e instanceof Error ? e.message : e}`),
    );
  };
  let generation = 0;

  async function reloadNow(): Promise<ReloadReport> {
    if (scheduler.draining || s.closed()) throw new WorkerError("unavailable", "the worker is shutting down");
    const t0 = performance.now();
    const report: ReloadReport = { added: [], changed: [], removed: [], unchanged: [], failed: [], ms: 0 };
    let folders: string[];
    try {
      folders = modelFolders(modelsDir, config.models);
    } catch (e) {
      throw new WorkerError("internal", `cannot read ${modelsDir}: ${e instanceof Error ? e.message : e}`);
    }
    for (const [name, m] of [...models]) {
      if (folders.includes(name)) continue;
      models.delete(name);
      registry.models.delete(name);
      registry.fingerprints.delete(name);
      reloadErrors.delete(name);
      delete providers[name];
      retire(m);
      report.removed.push(name);
    }
    for (const e of [...registry.errors]) {
      if (folders.includes(e.folder)) continue;
      registry.errors.splice(registry.errors.indexOf(e), 1);
      registry.fingerprints.delete(e.folder);
      report.removed.push(e.folder);
    }
    for (const folder of folders) {
      const path = join(modelsDir, folder);
      if (registry.fingerprints.get(folder) === folderFingerprint(path)) {
        report.unchanged.push(folder);
        continue;
      }
      const served = models.get(folder);
      loading.add(folder);
      try {
        const info = await loadModelFolder(path, { build: config.build, log });
        const name = info.manifest.name; // the folder's name (manifest.ts checks it)
        // its own name in the thread: a new version runs beside the old one until the old one's last
        // request ends, and a folder removed and added again does not meet its old sessions
        const key = `${name}#${++generation}`;
        let modelInputs: Partial<Record<GraphKind, string[]>>, provider: string;
        if (inference.load) {
          const keyed = { ...info, manifest: { ...info.manifest, name: key } };
          const r = await inference.load([keyed]);
          const rep = r.models.get(key);
          if (!rep) throw new Error(r.failed.get(key) ?? "the inference thread did not load it");
          modelInputs = rep.inputs as Partial<Record<GraphKind, string[]>>;
          provider = rep.provider;
          log(
            `model ${name}: ${provider}; loaded in ${rep.loadMs.toFixed(0)} ms, warm-up ${
              rep.warmupMs.toFixed(0)
            } ms`,
          );
        } else if (config.inference) {
          const cls = info.manifest.classes ? ["class"] : [];
          modelInputs = { eps: ["x", "t", ...cls], head: ["x", "t", ...cls], jvp: ["x", "t", ...cls] };
          provider = "test";
        } else throw new Error("the inference backend cannot load models while running");
        const next: ServedModel = {
          info,
          inputs: modelInputs,
          maxBatch: Math.min(cap, info.manifest.limits.max_batch),
          ...(key !== name ? { key } : {}),
        };
        models.set(name, next);
        registry.models.set(name, info);
        providers[name] = provider;
        reloadErrors.delete(name);
        const failedBefore = registry.errors.findIndex((e) => e.folder === folder);
        if (failedBefore >= 0) registry.errors.splice(failedBefore, 1);
        if (served) {
          retire(served);
          report.changed.push(name);
        } else report.added.push(name);
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        if (served) {
          reloadErrors.set(folder, error);
          report.failed.push({ name: folder, error, serving: "previous version" });
          log(`model ${folder}: its new version failed to load (the previous one serves): ${error}`);
        } else {
          const at = registry.errors.findIndex((x) => x.folder === folder);
          if (at >= 0) registry.errors.splice(at, 1);
          registry.errors.push({ folder, message: error });
          report.failed.push({ name: folder, error });
          log(`skipping model folder ${folder}: ${error}`);
        }
      } finally {
        loading.delete(folder);
        // as loaded (building an analytic model writes into its folder); a failed one is retried once it changes
        registry.fingerprints.set(folder, folderFingerprint(path));
      }
    }
    report.ms = Math.round(performance.now() - t0);
    log(
      `reload: ${
        (["added", "changed", "removed"] as const).map((k) => `${k} ${report[k].join(", ") || "-"}`).join(
          "; ",
        )
      }; ${report.failed.length} failed; ${report.unchanged.length} unchanged (${report.ms} ms)`,
    );
    return report;
  }
  let reloads: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<ReloadReport> => {
    const next = reloads.then(reloadNow);
    reloads = next.catch(() => {});
    return next;
  };
  return reload;
}
