# One serve job per server group (model, backend, dtype, context, gen, decoding): it starts the group's server
# once and measures every load point of the group (each one a cell: its own row in its own file under
# results/cells/, which the job writes and keeps; deploybench.measure.serve_group). Its one declared output is the
# group's marker. Its params hold every load point's cell spec: adding a point or editing a setting reruns the
# job, which measures only the points without a good row of their current settings.
from deploybench.plan.serving import (
    check_engines,
    find_group,
    marker_path,
    serve_groups,
    serve_params,
)

SERVE_GROUPS = serve_groups(SETTINGS)
SERVE_MARKERS = [marker_path(group) for group in SERVE_GROUPS]


def serve_job_params(wildcards):
    """Every load point's settings of this group, as canonical JSON: the rerun trigger."""
    group = find_group(wildcards, SERVE_GROUPS)
    return serve_params(SETTINGS, group, SERVE_GROUPS[group])


def check_engines_before_jobs():
    """Before the first job (common.smk's onstart): the engines the serve jobs start have an interpreter here."""
    backends = [
        job.wildcards["backend"]
        for job in workflow.dag.needrun_jobs()
        if job.rule.name == "serve"
    ]
    check_engines(SETTINGS, backends)


rule serve:
    output:
        naming.SERVE_MARKER,
    log:
        naming.SERVE_LOG,
    benchmark:
        naming.SERVE_BENCHMARK
    resources:
        gpu=1,
    params:
        job=serve_job_params,
    shell:
        "{PYTHON} scripts/serve_group.py --job-json {params.job:q} --marker {output:q} > {log:q} 2>&1"


localrules:
    serving,


# `snakemake serving`: the serve jobs alone (no measure job, no table, no report).
rule serving:
    input:
        SERVE_MARKERS,
