process VALIDATE_OUTPUTS {
    tag "${metas.size()} chunks"
    label 'process_medium'

    input:
    tuple val(metas), path(fastas, stageAs: 'fasta/?/*'), path(dnaberts, stageAs: 'dnabert/?/*'),
          path(esms, stageAs: 'esm/?/*'), path(merged, stageAs: 'merged/?/*')
    path preflight_json
    path embed_stats, stageAs: 'stats/embed/*'
    path merge_stats, stageAs: 'stats/merge/*'
    path dna_stats, stageAs: 'stats/dna/*'     // EMBED_DNA's, where DNABERT-S was computed (may be none)
    val params_json

    output:
    path 'validation.json' , emit: validation
    path 'report.html'     , emit: report
    path 'params.json'     , emit: params
    path 'versions.json'   , emit: versions

    script:
    def table = [metas, asList(fastas), asList(dnaberts), asList(esms), asList(merged)].transpose()
        .collect { m, f, d, e, o -> "'" + [m.key, m.group, m.id, m.label, f, d, e, o].join(',') + "'" }
        .join(' ')
    """
    printf '%s\\n' ${params_json} > params.json
    printf '%s\\n' key,group,id,label,protein_fasta,dnabert_embeddings,esm,merged ${table} > outputs.csv
    status=0
    virnucpro-extract validate \\
        --table outputs.csv \\
        --allow_missing ${params.allow_missing} \\
        --out validation.json \\
        --sample feature_sample.pt || status=\$?
    virnucpro-extract report \\
        --validation validation.json \\
        --sample feature_sample.pt \\
        --preflight ${preflight_json} \\
        --embed_stats ${asList(embed_stats).join(' --embed_stats ')} \\
        --merge_stats ${asList(merge_stats).join(' --merge_stats ')} \\
        ${asList(dna_stats).collect { stats -> "--dna_stats ${stats}" }.join(' ')} \\
        --params_json params.json \\
        --nextflow_version ${workflow.nextflow.version} \\
        --versions_out versions.json \\
        --out report.html
    # A failed validation still publishes its report; the workflow then fails the run.
    [ "\$status" -le 1 ]
    """

    stub:
    """
    echo '{"passed": true, "checks_run": 0, "checks_failed": 0, "checks": [], "chunks": []}' > validation.json
    echo '<!DOCTYPE html><html><body>stub run: no report</body></html>' > report.html
    printf '%s\\n' ${params_json} > params.json
    echo '{}' > versions.json
    """
}

// A path input holding one file is a Path, not a list.
def asList(files) {
    files instanceof List ? files : [files]
}
