"""Prints the losses and digests of runs.sh's outputs (see compare_builds.sh), one per line,
so that two builds' outputs can be diffed; run folders' own paths are replaced by OUT."""
import hashlib, json, os, sys, glob
out = sys.argv[1].rstrip("/")
def sha(p): return hashlib.sha256(open(p, 'rb').read()).hexdigest()[:16]
for run in ['p1', 'p2', 'p3']:
    for line in open(f'{out}/{run}/log.jsonl'):
        v = json.loads(line)
        print(run, {k: v[k] for k in sorted(v) if not k.startswith('perf/')})
    for ck in sorted(glob.glob(f'{out}/{run}/checkpoints/step_*')):
        for f in ['model.safetensors', 'optimizer.safetensors']:
            print(run, os.path.basename(ck), f, sha(f'{ck}/{f}'))
    print(run, 'config', hashlib.sha256(open(f'{out}/{run}/config.toml').read().replace(out, 'OUT').encode()).hexdigest()[:16])
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for run in ['f1', 'f2', 'f3']:
    m = json.load(open(f'{out}/{run}/metrics.json')); m.pop('train_seconds'); m.pop('model')
    print(run, json.dumps(m, sort_keys=True))
    for f in sorted(os.listdir(f'{out}/{run}')):
        p = f'{out}/{run}/{f}'
        if os.path.isfile(p) and f != 'metrics.json': print(run, f, sha(p))
    print(run, 'model', sha(f'{out}/{run}/model/model.safetensors'))
    for d in glob.glob(f'{out}/{run}/tensorboard'):
        ea = EventAccumulator(d); ea.Reload()
        for tag in ea.Tags()['scalars']:
            print(run, tag, [round(e.value, 9) for e in ea.Scalars(tag)])
