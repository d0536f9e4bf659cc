/*
 * Every check of every chunk of one task group: widths, NaN/Inf, counts, ids against rows, DNABERT-S order,
 * labels. A failed check is a result, not a task failure: REPORT shows it and the workflow then stops the run.
 */
process VALIDATE_OUTPUTS {
    tag "${meta.id} (${meta.chunks.size()} chunks)"
    label 'process_low'

    input:
    tuple val(meta), path(fastas, stageAs: 'fasta/?/*'), path(given, stageAs: 'given/?/*'),
          path(computed, stageAs: 'computed_dnabert'), path(esm, stageAs: 'esm'), path(merged, stageAs: 'data_merge')

    output:
    tuple val(meta), path('*.validation.json'), path('*.sample.pt'), emit: validation
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: meta.id
    def fastaFiles = (fastas instanceof List ? fastas : [fastas]).iterator()
    def givenFiles = (given instanceof List ? given : [given]).iterator()
    def rows = meta.chunks.collect { chunk ->
        def dnabert = chunk.dnabert_computed ? "computed_dnabert/${chunk.key}_DNABERT_S.pt" : givenFiles.next()
        [chunk.key, chunk.group, chunk.id, chunk.label, fastaFiles.next(), dnabert, "esm/${chunk.key}_ESM.pt",
         "data_merge/${chunk.group}_merged/${chunk.id}_merged.pt"].join(',')
    }
    """
    printf '%s\\n' key,group,id,label,protein_fasta,dnabert_embeddings,esm,merged ${rows.collect { row -> "'${row}'" }.join(' ')} > outputs.csv
    status=0
    virnucpro-extract validate --table outputs.csv --out ${prefix}.validation.json --sample ${prefix}.sample.pt ${args} || status=\$?
    # 1: some check failed (the result is in the JSON); anything else is a crash
    [ "\$status" -le 1 ]
    """

    stub:
    def prefix = task.ext.prefix ?: meta.id
    """
    echo '{"passed": true, "checks_run": 0, "checks_failed": 0, "checks": [], "chunks": []}' > ${prefix}.validation.json
    touch ${prefix}.sample.pt
    """
}
