process MERGE_FEATURES {
    tag "${meta.key}"
    label 'process_single'

    input:
    tuple val(meta), path(esm), path(dnabert)

    output:
    tuple val(meta), path("${meta.group}_merged/${meta.id}_merged.pt"), emit: merged
    path "${meta.group}__${meta.id}.merge.json"                       , emit: stats

    script:
    """
    virnucpro-extract merge \\
        --dnabert ${dnabert} \\
        --esm ${esm} \\
        --label ${meta.label} \\
        --allow_missing ${params.allow_missing} \\
        --output ${meta.group}_merged/${meta.id}_merged.pt \\
        --stats ${meta.group}__${meta.id}.merge.json
    """

    stub:
    """
    mkdir -p ${meta.group}_merged
    touch ${meta.group}_merged/${meta.id}_merged.pt
    echo '{"rows": 0, "dropped_dnabert_only": [], "dropped_protein_only": []}' > ${meta.group}__${meta.id}.merge.json
    """
}
