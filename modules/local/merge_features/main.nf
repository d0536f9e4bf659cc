/*
 * Merged 2048-column features of every chunk of one task group, in one task (one Python start, one Slurm job
 * per group rather than per chunk): data_merge/<group>_merged/<id>_merged.pt. Each chunk's DNABERT-S file is
 * either given (staged in `given`, in the order of the chunks marked so) or computed by EMBED_DNA (`computed`).
 */
process MERGE_FEATURES {
    tag "${meta.id} (${meta.chunks.size()} chunks)"
    label 'process_low'

    input:
    tuple val(meta), path(esm, stageAs: 'esm'), path(computed, stageAs: 'computed_dnabert'), path(given, stageAs: 'given/?/*')

    output:
    tuple val(meta), path('data_merge')   , emit: merged
    tuple val(meta), path('*.merge.json') , emit: stats
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: meta.id
    def givenFiles = (given instanceof List ? given : [given]).iterator()
    def rows = meta.chunks.collect { chunk ->
        def dnabert = chunk.dnabert_computed ? "computed_dnabert/${chunk.key}_DNABERT_S.pt" : givenFiles.next()
        [chunk.key, chunk.group, chunk.id, chunk.label, dnabert, "esm/${chunk.key}_ESM.pt",
         "data_merge/${chunk.group}_merged/${chunk.id}_merged.pt"].join(',')
    }
    """
    printf '%s\\n' key,group,id,label,dnabert_embeddings,esm,merged ${rows.collect { row -> "'${row}'" }.join(' ')} > merge.csv
    virnucpro-extract merge --table merge.csv --stats ${prefix}.merge.json ${args}
    """

    stub:
    def prefix = task.ext.prefix ?: meta.id
    def touches = meta.chunks.collect { chunk -> "mkdir -p data_merge/${chunk.group}_merged && touch data_merge/${chunk.group}_merged/${chunk.id}_merged.pt" }.join('\n    ')
    """
    ${touches}
    echo '{"chunks": []}' > ${prefix}.merge.json
    """
}
