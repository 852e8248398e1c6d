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
        config={
            key: config.get(key, {})
            for key in (
                "models",
                "decoding",
                "studies",
                "analysis",
                "report",
                "measurement",
            )
        },
        templates_dir=f"{workflow.basedir}/workflow/templates",
    script:
        "../../scripts/report.py"
