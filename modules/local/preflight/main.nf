/*
 * Every parameter PREFLIGHT's result depends on and every input file, checked before any GPU work; writes the
 * chunk manifest. It reads only what is staged here (inputs, model directories), so it works as well with
 * inputs on object storage or inside a container that mounts only staged files; `origins` are the paths the
 * user knows the staged inputs by, for the error lines and the manifest.
 */
process PREFLIGHT {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(inputs, stageAs: 'inputs/?/*'), val(origins)
    tuple val(esm_model), path(esm_model_dir, stageAs: 'esm_model/*')
    tuple val(dnabert_model), path(dnabert_model_dir, stageAs: 'dnabert_model/*')
    path schema
    val params_json    // only the parameters that change PREFLIGHT's result (not --outdir)
    val launch_dir     // relative model paths are named from here (a string: a Path's mtime would defeat -resume)

    output:
    path 'chunks.csv'    , emit: manifest
    path 'preflight.json', emit: summary
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def staged = [inputs instanceof List ? inputs : [inputs], origins].transpose()
        .collect { staged_path, origin -> shellQuote("${staged_path}\t${origin}") }.join(' ')
    def models = [esm_model_dir ? "--esm_model_dir ${esm_model_dir}" : '',
                  dnabert_model_dir ? "--dnabert_model_dir ${dnabert_model_dir}" : ''].join(' ')
    """
    printf '%s\\n' ${shellQuote(params_json)} > params.json
    printf '%s\\n' ${staged} > staged.tsv
    virnucpro-extract preflight \\
        --params_json params.json \\
        --staged staged.tsv \\
        --schema ${schema} \\
        ${models} \\
        --launch_dir ${shellQuote(launch_dir)} \\
        --outdir . \\
        ${args}
    """

    stub:
    def staged = [inputs instanceof List ? inputs : [inputs], origins].transpose()
        .collect { staged_path, origin -> shellQuote("${staged_path}\t${origin}") }.join(' ')
    """
    printf '%s\\n' ${shellQuote(params_json)} > params.json
    printf '%s\\n' ${staged} > staged.tsv
    virnucpro-extract preflight --params_json params.json --staged staged.tsv --schema ${schema} --discover_only --outdir .
    """
}

def shellQuote(text) {
    "'" + text.toString().replace("'", "'\\''") + "'"
}
