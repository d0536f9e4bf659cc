/*
 * The run's report.html (one self-contained page) and the combined validation.json. It emits no versions:
 * it reads the versions topic, which closes only when every process that writes to it has ended.
 */
process REPORT {
    tag "${validations instanceof List ? validations.size() : 1} groups"
    label 'process_single'

    input:
    path validations, stageAs: 'validation/?/*'
    path samples    , stageAs: 'sample/?/*'
    path preflight_json
    path embed_stats, stageAs: 'stats/embed/*'
    path merge_stats, stageAs: 'stats/merge/*'
    path dna_stats  , stageAs: 'stats/dna/*'     // EMBED_DNA's, where DNABERT-S was computed (may be none)
    path identify_stats, stageAs: 'stats/identify/*'   // IDENTIFY_FRAMES', for prefixes started from genomes
    path split_stats, stageAs: 'stats/split/*'   // SPLIT_IDENTIFIED's
    path plan_json
    val versions_yml    // nf-core's versions.yml, from every process's `topic: versions` outputs
    val params_json

    output:
    path 'report.html'    , emit: report
    path 'validation.json', emit: validation
    path 'versions.yml'   , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    """
    printf '%s\\n' ${shellQuote(params_json)} > params.json
    printf '%s' ${shellQuote(versions_yml)} > versions.yml
    virnucpro-extract report \\
        ${repeatOption('--validation', validations)} \\
        ${repeatOption('--sample', samples)} \\
        --preflight ${preflight_json} \\
        ${repeatOption('--embed_stats', embed_stats)} \\
        ${repeatOption('--merge_stats', merge_stats)} \\
        ${repeatOption('--dna_stats', dna_stats)} \\
        ${repeatOption('--identify_stats', identify_stats)} \\
        ${repeatOption('--split_stats', split_stats)} \\
        --plan ${plan_json} \\
        --versions versions.yml \\
        --params_json params.json \\
        --nextflow_version ${workflow.nextflow.version} \\
        --validation_out validation.json \\
        --out report.html
    """

    stub:
    """
    printf '%s' ${shellQuote(versions_yml)} > versions.yml
    echo '{"passed": true, "checks_run": 0, "checks_failed": 0, "checks": [], "chunks": []}' > validation.json
    echo '<!DOCTYPE html><html><body>stub run: no report</body></html>' > report.html
    """
}

def shellQuote(text) {
    "'" + text.toString().replace("'", "'\\''") + "'"
}

/*
 * One `--option file` pair per staged file: a path input is a single path for one file and a list for several.
 */
def repeatOption(option, files) {
    return (files instanceof List ? files : [files]).collect { f -> "${option} ${f}" }.join(' ')
}
