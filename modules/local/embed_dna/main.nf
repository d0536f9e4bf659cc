process EMBED_DNA {
    tag "${meta.id} (${meta.keys.size()} chunks)"
    label 'gpu'
    maxForks 1

    input:
    tuple val(meta), path(fastas, stageAs: 'input/?/*')
    path model_dir, stageAs: 'dnabert_model/*'
    val model_key   // content key of the model: -resume recomputes when the weights change

    output:
    path 'dnabert/*/*_DNABERT_S.pt'  , emit: dnabert
    path "${meta.id}.embed_dna.json" , emit: stats

    script:
    def chunks = [meta.keys, fastas instanceof List ? fastas : [fastas]].transpose()
        .collect { key, fasta -> "${key}=${fasta}" }.join(' ')
    def model = model_dir ? model_dir : params.dnabert_model
    def precision = params.precision ? "--precision ${params.precision}" : ''
    // The worker halves the token budget (given or chosen from free memory) on each retry.
    def budget = params.toks_per_batch ? "--toks_per_batch ${params.toks_per_batch}" : ''
    """
    virnucpro-extract embed-dna \\
        ${chunks} \\
        --outdir dnabert \\
        --dnabert_model ${model} \\
        --use_gpu ${params.use_gpu} \\
        ${precision} ${budget} \\
        --attempt ${task.attempt} \\
        --stats ${meta.id}.embed_dna.json
    """

    stub:
    def touches = meta.keys.collect { key -> "mkdir -p dnabert/${key.tokenize('/')[0]} && touch dnabert/${key}_DNABERT_S.pt" }.join('\n    ')
    """
    ${touches}
    echo '{"chunks": []}' > ${meta.id}.embed_dna.json
    """
}
