process PREFLIGHT {
    tag "${params.data_dir ?: params.input}"
    label 'process_single'

    input:
    val params_json
    path schema
    path inputs, stageAs: 'inputs/?/*'
    path model_dir, stageAs: 'model/?/*'   // the ESM and DNABERT-S model directories (local ones)
    val launch_dir                           // relative model paths are taken from here

    output:
    path 'chunks.csv'     , emit: manifest
    path 'preflight.json' , emit: summary

    script:
    """
    printf '%s\\n' ${params_json} > params.json
    virnucpro-extract preflight \\
        --params_json params.json \\
        --schema ${schema} \\
        --workers ${task.cpus} \\
        --launch_dir ${launch_dir} \\
        --outdir .
    """

    stub:
    """
    printf '%s\\n' ${params_json} > params.json
    virnucpro-extract preflight --params_json params.json --schema ${schema} --discover_only --outdir .
    """
}
