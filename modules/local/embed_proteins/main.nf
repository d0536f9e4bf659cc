process EMBED_PROTEINS {
    tag "${meta.id} (${meta.keys.size()} chunks)"
    label 'gpu'
    maxForks 1

    input:
    tuple val(meta), path(fastas, stageAs: 'input/?/*')
    path model_dir, stageAs: 'model/*'
    val model_key   // content key of the model: -resume re-embeds when the weights change

    output:
    path 'esm/*/*_ESM.pt'      , emit: esm
    path "${meta.id}.embed.json", emit: stats

    script:
    def chunks = [meta.keys, fastas instanceof List ? fastas : [fastas]].transpose()
        .collect { key, fasta -> "${key}=${fasta}" }.join(' ')
    def model = model_dir ? model_dir : params.esm_model
    def precision = params.precision ? "--precision ${params.precision}" : ''
    // The worker halves the token budget (given or chosen from free memory) on each retry.
    def budget = params.toks_per_batch ? "--toks_per_batch ${params.toks_per_batch}" : ''
    """
    virnucpro-extract embed \\
        ${chunks} \\
        --outdir esm \\
        --esm_model ${model} \\
        --use_gpu ${params.use_gpu} \\
        --max_length ${params.max_length} \\
        --trust_remote_code ${params.trust_remote_code} \\
        --compile ${params.compile} \\
        --compile_min_tokens ${params.compile_min_tokens} \\
        --fast_forward ${params.fast_forward} \\
        --gpus ${params.use_gpu ? params.gpus : 1} \\
        ${precision} ${budget} \\
        --attempt ${task.attempt} \\
        --stats ${meta.id}.embed.json
    """

    stub:
    def touches = meta.keys.collect { key -> "mkdir -p esm/${key.tokenize('/')[0]} && touch esm/${key}_ESM.pt" }.join('\n    ')
    """
    ${touches}
    echo '{"chunks": []}' > ${meta.id}.embed.json
    """
}
