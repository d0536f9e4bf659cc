/*
 * The chunks the run embeds, once all exist (given ones and those split here): only full split files unless
 * --keep_partial_files (the short ones counted and listed), VirNucPro's host sampling over chunks of every origin,
 * and the task groups of --chunks_per_task. Writes the run's chunk manifest.
 */
process PLAN_CHUNKS {
    tag "${meta.id}"
    label 'process_single'
    cache 'deep'    // the candidates file is written anew on every run; its content is what matters

    input:
    tuple val(meta), path(candidates)

    output:
    path 'chunks.csv', emit: manifest
    path 'plan.json' , emit: plan
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-extract plan --candidates ${candidates} --balance_hosts ${meta.balance} --out plan.json --manifest chunks.csv ${args}
    """

    stub:
    def args = task.ext.args ?: ''
    """
    virnucpro-extract plan --candidates ${candidates} --balance_hosts ${meta.balance} --out plan.json --manifest chunks.csv ${args}
    """
}
