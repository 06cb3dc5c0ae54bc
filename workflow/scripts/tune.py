import json

from clipva.atomic import write_text
from clipva.jobs import run_job
from clipva.splits import read_clips
from clipva.store import FeatureStore
from clipva.tune import search, search_key, study_name


def main(smk):
    tune = smk.params.tune
    clips = read_clips(smk.input.clips)
    with FeatureStore(smk.input.features) as store:
        stored = set(store.clip_ids)
        ids = [c for c in clips.loc[clips["split"].isin(["train", "val"]), "clip_id"] if c in stored]
        features = dict(zip(ids, store.load_many(ids), strict=True))
    key = search_key(tune, smk.params.settings, smk.input.features, smk.input.clips)
    ran = search(
        clips,
        features,
        smk.params.settings,
        tune["space"],
        tune["trials"],
        tune["folds"],
        smk.params.journal,
        key,
        seed=tune["seed"] + int(smk.wildcards.worker),
    )
    write_text(smk.output[0], json.dumps({"study": study_name(key), "trials_run": ran}))


run_job(snakemake, main)  # noqa: F821
