/*
 * FastESM2 / ESM-2 embeddings of one task group of chunk files (one model load and compile per task):
 * esm/<group>/<id>_ESM.pt for each chunk of meta.chunks, in the order of `fastas`.
 */
process EMBED_PROTEINS {
    tag "${meta.id} (${meta.chunks.size()} chunks)"
    label 'process_gpu'

    input:
    tuple val(meta), path(fastas, stageAs: 'input/?/*')
    tuple val(model), path(model_dir, stageAs: 'model/*')
    val model_key   // content key of the model: -resume re-embeds when the weights change

    output:
    tuple val(meta), path('esm')                 , emit: esm
    tuple val(meta), path('*.embed.json')      , emit: stats
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions
    tuple val("${task.process}"), val('torch'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'torch\'))"'), topic: versions
    tuple val("${task.process}"), val('transformers'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'transformers\'))"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: meta.id
    def chunks = [meta.chunks.collect { chunk -> chunk.key }, fastas instanceof List ? fastas : [fastas]].transpose()
        .collect { key, fasta -> "${key}=${fasta}" }.join(' ')
    // The worker halves the token budget (given or chosen from free memory) on each retry.
    """
    virnucpro-extract embed \\
        ${chunks} \\
        --outdir esm \\
        --esm_model ${model_dir ?: model} \\
        --attempt ${task.attempt} \\
        --stats ${prefix}.embed.json \\
        ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: meta.id
    def touches = meta.chunks.collect { chunk -> "mkdir -p esm/${chunk.group} && touch esm/${chunk.key}_ESM.pt" }.join('\n    ')
    """
    ${touches}
    echo '{"chunks": []}' > ${prefix}.embed.json
    """
}
