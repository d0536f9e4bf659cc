/*
 * DNABERT-S embeddings of the chunks of one task group that have reads but no DNABERT-S file (or all of them
 * with --recompute_dnabert): dnabert/<group>/<id>_DNABERT_S.pt for each chunk of meta.chunks.
 */
process EMBED_DNA {
    tag "${meta.id} (${meta.chunks.size()} chunks)"
    label 'process_gpu'

    input:
    tuple val(meta), path(reads, stageAs: 'reads/?/*')
    tuple val(model), path(model_dir, stageAs: 'dnabert_model/*')
    val model_key   // content key of the model: -resume recomputes when the weights change

    output:
    tuple val(meta), path('dnabert')                 , emit: dnabert
    tuple val(meta), path('*.embed_dna.json')      , emit: stats
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions
    tuple val("${task.process}"), val('torch'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'torch\'))"'), topic: versions
    tuple val("${task.process}"), val('transformers'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'transformers\'))"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: meta.id
    def chunks = [meta.chunks.collect { chunk -> chunk.key }, reads instanceof List ? reads : [reads]].transpose()
        .collect { key, fasta -> "${key}=${fasta}" }.join(' ')
    // The worker halves the token budget (given or chosen from free memory) on each retry.
    """
    virnucpro-extract embed-dna \\
        ${chunks} \\
        --outdir dnabert \\
        --dnabert_model ${model_dir ?: model} \\
        --attempt ${task.attempt} \\
        --stats ${prefix}.embed_dna.json \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: meta.id
    def touches = meta.chunks.collect { chunk -> "mkdir -p dnabert/${chunk.group} && touch dnabert/${chunk.key}_DNABERT_S.pt" }.join('\n    ')
    """
    ${touches}
    echo '{"chunks": []}' > ${prefix}.embed_dna.json
    """
}
