/*
 * RefSeq genomes -> identified FASTA for one shard (a run of records) of one genome FASTA, as VirNucPro's
 * make_train_dataset_300.py / _500.py writes it: reads, six frames, the stop-free frames that are substrings of a
 * CDS translation of the GenBank record. CPU; one task per shard, so a cluster runs them side by side.
 */
process IDENTIFY_FRAMES {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(fasta, stageAs: 'genome/*'), path(genbank, stageAs: 'genbank/*')

    output:
    tuple val(meta), path("${meta.id}.identified_nucleotide.fa"), path("${meta.id}.identified_protein.fa"), emit: frames
    tuple val(meta), path("${meta.id}.identify.json")                                                     , emit: stats
    tuple val("${task.process}"), val('virnucpro-extract'), eval('virnucpro-extract --version | sed "s/.* //"'), topic: versions
    tuple val("${task.process}"), val('biopython'), eval('python3 -c "import Bio; print(Bio.__version__)"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-extract identify \\
        --fasta ${fasta} \\
        --genbank ${genbank} \\
        --first_record ${meta.first} \\
        --last_record ${meta.last} \\
        --genbank_reader ${meta.genbank_reader} \\
        --nucleotide_out ${meta.id}.identified_nucleotide.fa \\
        --protein_out ${meta.id}.identified_protein.fa \\
        --stats ${meta.id}.identify.json \\
        ${args}
    """

    stub:
    """
    touch ${meta.id}.identified_nucleotide.fa ${meta.id}.identified_protein.fa
    echo '{"records": 0, "reads": 0, "frames_kept": 0}' > ${meta.id}.identify.json
    """
}
