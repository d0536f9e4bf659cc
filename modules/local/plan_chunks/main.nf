/*
 * The chunks the run embeds, once all exist (given ones and those split here): only full split files unless
 * --keep_partial_files (the short ones counted and listed), VirNucPro's host sampling over chunks of every origin,
 * and the task groups of --chunks_per_task. Writes the run's chunk manifest.
 */
process PLAN_CHUNKS {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), val(candidates)   // CSV text: every chunk, given or split here

    output:
    path 'chunks.csv', emit: manifest
    path 'plan.json' , emit: plan
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    printf '%s' ${shellQuote(candidates)} > candidates.csv
    virnucpro-extract plan --candidates candidates.csv --balance_hosts ${meta.balance} --out plan.json --manifest chunks.csv ${args}
    """

    stub:
    def args = task.ext.args ?: ''
    """
    printf '%s' ${shellQuote(candidates)} > candidates.csv
    virnucpro-extract plan --candidates candidates.csv --balance_hosts ${meta.balance} --out plan.json --manifest chunks.csv ${args}
    """
}

def shellQuote(text) {
    "'" + text.toString().replace("'", "'\\''") + "'"
}
