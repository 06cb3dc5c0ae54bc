from clipva.jobs import run_job
from clipva.training import pretrain_files


def main(smk):
    settings = {"head": smk.params.head, "pretrain": smk.params.pretrain, "backbone": smk.params.backbone}
    out = {"head": smk.output.head, "adapter": smk.output.adapter, "history": smk.output.history}
    i = smk.input
    pretrain_files(i.features, i.clips, i.text, settings, smk.params.state, out, frames=i.get("frames"))


run_job(snakemake, main)  # noqa: F821
