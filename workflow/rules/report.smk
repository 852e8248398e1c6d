# The Jinja-rendered report: HTML (self-contained) and LaTeX (+ PDF when pdflatex exists).


localrules:
    report,


rule report:
    input:
        "results/ape.parquet",
        templates=[
            "workflow/templates/report.html.j2",
            "workflow/templates/report.tex.j2",
            "workflow/templates/captions.yaml",
        ],
    output:
        html="report/report.html",
        tex="report/report.tex",
    log:
        "logs/report.log",
    params:
        # The validated config as JSON, the keys the config files give: it changes only when they do.
        config=SETTINGS.model_dump_json(exclude_unset=True),
        templates_dir=f"{workflow.basedir}/workflow/templates",
    script:
        "../../scripts/report.py"
