from clipva.jobs import run_job
from clipva.training import finetune_files


def main(smk):
    settings = {"finetune": smk.params.finetune, "backbone": smk.params.backbone}
    out = {"head": smk.output.head, "adapter": smk.output.adapter, "history": smk.output.history}
    i = smk.input
    finetune_files(i.features, i.clips, i.head, settings, smk.params.state, out, i.get("frames"), i.get("adapter"))


run_job(snakemake, main)  # noqa: F821
